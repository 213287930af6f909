import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/**
 * Stream `port.<n>`: who holds public port n. One stream per port makes the reservation a
 * create-or-check on a single aggregate, so two mappings racing for a port cannot both win.
 */
export type ReservePublicPort = { readonly type: 'ReservePublicPort'; readonly data: { readonly port: number; readonly mapping_id: number } };
/** `reason`: an operator's release (`tunnox ctl ports release`), recorded in the event. */
export type ReleasePublicPort = {
  readonly type: 'ReleasePublicPort';
  readonly data: { readonly port: number; readonly mapping_id: number; readonly reason?: string };
};
export type PortCommand = ReservePublicPort | ReleasePublicPort;

/** Invariant the command handler relies on (it folds only the last event): the state is a function of the last event. */
export interface PortState {
  /** Mapping currently holding the port, or null when free. */
  readonly heldBy: number | null;
}

export const portDecider: Decider<PortState, PortCommand> = {
  initialState: () => ({ heldBy: null }),
  evolve: (state, event: TypedStoredEvent): PortState => {
    switch (event.type) {
      case 'PublicPortReserved':
        return { heldBy: event.data.mapping_id };
      case 'PublicPortReleased':
        return state.heldBy === event.data.mapping_id ? { heldBy: null } : state;
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    const { port, mapping_id } = command.data;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RuleViolationError(DOMAIN_ERRORS.portOutOfRange, `public port ${port} is not a TCP port`, 'public_port');
    }
    switch (command.type) {
      case 'ReservePublicPort':
        // Re-reserving for the same mapping is a retry of a command that already succeeded.
        if (state.heldBy === mapping_id) return [];
        if (state.heldBy !== null) {
          throw new DomainError(DOMAIN_ERRORS.portInUse, `public port ${port} is held by mapping ${state.heldBy}`);
        }
        return [{ type: 'PublicPortReserved', data: { port, mapping_id } }];
      case 'ReleasePublicPort':
        // Releasing a free port is a retried release (compensation may run twice).
        if (state.heldBy === null) return [];
        if (state.heldBy !== mapping_id) {
          throw new DomainError(DOMAIN_ERRORS.portNotHeld, `public port ${port} is held by mapping ${state.heldBy}, not ${mapping_id}`);
        }
        return [{ type: 'PublicPortReleased', data: { port, mapping_id, ...(command.data.reason === undefined ? {} : { reason: command.data.reason }) } }];
    }
  },
};
