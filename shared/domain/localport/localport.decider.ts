import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';

/**
 * Stream `localport.<client_id>_<port>`: which mapping makes source client `client_id` listen on
 * `port`. One stream per (client, port) makes the reservation a create-or-check on a single
 * aggregate, so two mappings racing for the same local port cannot both win (the same scheme as
 * public ports, see port.decider.ts).
 *
 * The rule is per port, whatever the local_host: 127.0.0.1:13306 and 0.0.0.0:13306 on one machine
 * collide too, and the API cannot know which addresses an agent's machine has.
 */
export type ReserveLocalPort = {
  readonly type: 'ReserveLocalPort';
  readonly data: { readonly client_id: number; readonly port: number; readonly mapping_id: number };
};
/** `reason`: an operator's release (`tunnox ctl ports release --client`), recorded in the event. */
export type ReleaseLocalPort = {
  readonly type: 'ReleaseLocalPort';
  readonly data: { readonly client_id: number; readonly port: number; readonly mapping_id: number; readonly reason?: string };
};
export type LocalPortCommand = ReserveLocalPort | ReleaseLocalPort;

/** Invariant the command handler relies on (it folds only the last event): the state is a function of the last event. */
export interface LocalPortState {
  /** Mapping currently holding the port on that client, or null when free. */
  readonly heldBy: number | null;
}

export const localPortDecider: Decider<LocalPortState, LocalPortCommand> = {
  initialState: () => ({ heldBy: null }),
  evolve: (state, event: TypedStoredEvent): LocalPortState => {
    switch (event.type) {
      case 'LocalPortReserved':
        return { heldBy: event.data.mapping_id };
      case 'LocalPortReleased':
        return state.heldBy === event.data.mapping_id ? { heldBy: null } : state;
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    const { client_id, port, mapping_id } = command.data;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RuleViolationError(DOMAIN_ERRORS.mappingInvalid, `local_port ${port} is not a TCP port`, 'local_port');
    }
    switch (command.type) {
      case 'ReserveLocalPort':
        // Re-reserving for the same mapping is a retry of a command that already succeeded.
        if (state.heldBy === mapping_id) return [];
        if (state.heldBy !== null) {
          throw new DomainError(DOMAIN_ERRORS.localPortTaken, `client ${client_id} already listens on local_port ${port} for mapping ${state.heldBy}`, {
            details: { field: 'local_port' },
          });
        }
        return [{ type: 'LocalPortReserved', data: { client_id, port, mapping_id } }];
      case 'ReleaseLocalPort':
        // Releasing a free port is a retried release (compensation may run twice).
        if (state.heldBy === null) return [];
        if (state.heldBy !== mapping_id) {
          throw new DomainError(DOMAIN_ERRORS.localPortNotHeld, `local_port ${port} of client ${client_id} is held by mapping ${state.heldBy}, not ${mapping_id}`);
        }
        return [{ type: 'LocalPortReleased', data: { client_id, port, mapping_id, ...(command.data.reason === undefined ? {} : { reason: command.data.reason }) } }];
    }
  },
};
