import { SEQUENCE_MAX, SEQUENCE_START, type SequenceName } from '../../contracts/ids.js';
import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';

/** Stream `sequence.<name>`: one IdAllocated per handed-out id, so the stream revision serializes allocation. */
export type AllocateId = { readonly type: 'AllocateId'; readonly data: { readonly sequence: SequenceName } };
export type SequenceCommand = AllocateId;

export interface SequenceState {
  /** The last id handed out, or null when the sequence has never been used. */
  readonly last: number | null;
}

export const sequenceDecider: Decider<SequenceState, SequenceCommand> = {
  initialState: () => ({ last: null }),
  evolve: (state, event: TypedStoredEvent) => (event.type === 'IdAllocated' ? { last: event.data.id } : state),
  decide: (command, state): DomainEvent[] => {
    const { sequence } = command.data;
    const id = state.last === null ? SEQUENCE_START[sequence] : state.last + 1;
    if (id > SEQUENCE_MAX[sequence]) {
      throw new DomainError(DOMAIN_ERRORS.sequenceExhausted, `sequence ${sequence} has no ids left (max ${SEQUENCE_MAX[sequence]})`);
    }
    return [{ type: 'IdAllocated', data: { sequence, id } }];
  },
};
