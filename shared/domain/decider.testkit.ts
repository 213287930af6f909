import { parseStoredEvent, type DomainEvent } from '../contracts/events.js';
import { buildEnvelope } from '../eventstore/command.js';
import type { Decider } from './decider.js';

/**
 * Given/when/then for deciders, without any store: `given` folds past events (wrapped in envelopes
 * as a store would return them, and parsed against their schemas), `when` runs decide on the result.
 */
export function given<State, Cmd>(decider: Decider<State, Cmd>, stream: string, events: readonly DomainEvent[]) {
  let state = decider.initialState();
  events.forEach((event, i) => {
    const envelope = buildEnvelope(stream, event, { actor: { kind: 'system', id: 'test' } }, new Date(Date.UTC(2025, 0, 1)));
    state = decider.evolve(state, parseStoredEvent({ ...envelope, position: i + 1, version: i + 1, stream }));
  });
  return {
    state,
    when: (command: Cmd): readonly DomainEvent[] => decider.decide(command, state),
  };
}
