import type { Actor } from '../../shared/contracts/envelope.js';
import { localPortDecider } from '../../shared/domain/localport/localport.decider.js';
import { localPortStream, releaseLocalPort } from '../../shared/domain/localport/localport.commands.js';
import { loadMapping } from '../../shared/domain/mapping/mapping.commands.js';
import type { MappingState } from '../../shared/domain/mapping/mapping.decider.js';
import { portDecider } from '../../shared/domain/port/port.decider.js';
import { portStream, releasePublicPort } from '../../shared/domain/port/port.commands.js';
import { loadAggregate } from '../../shared/eventstore/command.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { CtlError } from './ctl-errors.js';

// `tunnox ctl ports release`: frees a port whose reservation outlived its mapping.

/**
 * A reservation younger than this whose mapping does not exist may belong to a create that is
 * still running (reserve, then MappingCreated): releasing it could let two mappings share the port.
 */
export const IN_FLIGHT_CREATE_MS = 120_000;

export type Holder = 'never-created' | 'deleted' | 'live';

export interface ReleaseResult {
  kind: 'public' | 'local';
  port: number;
  /** The source client, for a local port. */
  client_id: number | null;
  stream: string;
  held_by: number;
  /** What became of the mapping holding the port. */
  holder: Holder;
  reserved_at: string;
  /** Position of the PublicPortReleased / LocalPortReleased appended. */
  position: number;
  reason: string;
}

export interface ReleaseOptions {
  store: EventStore;
  port: number;
  /** Release the source client's local port instead of the public port. */
  clientId?: number;
  reason: string;
  actor: Actor;
  force?: boolean;
  now?: Date;
}

function holds(state: MappingState, o: { port: number; clientId?: number }): boolean {
  if (state.status !== 'active') return false;
  const m = state.mapping;
  return o.clientId === undefined ? m.public_port === o.port : m.source_client_id === o.clientId && m.local_port === o.port;
}

/**
 * Releases a public port (or, with clientId, a source client's local port) as an audited
 * PublicPortReleased / LocalPortReleased: actor the operator, with the reason. The holder is
 * looked up in the log: a mapping that was never created (a create that crashed after reserving
 * the port) or was deleted (a delete that crashed before freeing it) is released; a live mapping
 * that holds the port, or a reservation so young that its create may still be running, only with
 * `force`. The release goes through the port's decider and its revision check, so if the port
 * changed hands in the meantime nothing is released (TNX_PORT_NOT_HELD).
 */
export async function releasePort(o: ReleaseOptions): Promise<ReleaseResult> {
  const local = o.clientId !== undefined;
  const stream = local ? localPortStream(o.clientId!, o.port) : portStream(o.port);
  const what = local ? `local port ${o.port} of client ${o.clientId}` : `public port ${o.port}`;
  const current = local ? await loadAggregate(o.store, stream, localPortDecider, true) : await loadAggregate(o.store, stream, portDecider, true);
  const heldBy = current.state.heldBy;
  if (heldBy === null) {
    throw new CtlError('TNX_CTL_PORT_FREE', `${what} is not reserved (${current.version === 0 ? 'never was' : 'already released'}); nothing to release`);
  }
  const { event: reservation } = await o.store.readLastEvent(stream);
  const reservedAt = reservation?.occurred_at ?? '?';
  const mapping = await loadMapping(o.store, heldBy);
  const holder: Holder = holds(mapping, o) ? 'live' : mapping.status === 'absent' ? 'never-created' : 'deleted';
  if (!o.force) {
    if (holder === 'live') {
      throw new CtlError(
        'TNX_CTL_PORT_IN_USE',
        `${what} is held by mapping ${heldBy}, which exists and uses it: delete the mapping instead (DELETE /api/v1/mappings/${heldBy} frees the port). ` +
          '--force releases it anyway, but the mapping keeps serving the port and another mapping could then be given it too',
      );
    }
    const age = (o.now ?? new Date()).getTime() - Date.parse(reservedAt);
    if (holder === 'never-created' && !(age >= IN_FLIGHT_CREATE_MS)) {
      throw new CtlError(
        'TNX_CTL_PORT_RECENT',
        `${what} was reserved for mapping ${heldBy} ${Math.round(age / 1000)} s ago and that mapping does not exist yet: its create may still be running. ` +
          `Retry in ${Math.ceil((IN_FLIGHT_CREATE_MS - age) / 1000)} s, or --force`,
      );
    }
  }
  const meta = { actor: o.actor };
  const { position } = local
    ? await releaseLocalPort(o.store, { clientId: o.clientId!, port: o.port, mappingId: heldBy, reason: o.reason }, meta)
    : await releasePublicPort(o.store, { port: o.port, mappingId: heldBy, reason: o.reason }, meta);
  const { event } = await o.store.readLastEvent(stream);
  // The decider decides nothing for a port found free (someone released it meanwhile): then the
  // last event is not ours.
  const ours =
    event !== null &&
    event.position === position &&
    event.position > (reservation?.position ?? 0) &&
    event.type.endsWith('PortReleased') &&
    event.actor.kind === o.actor.kind &&
    event.actor.id === o.actor.id &&
    (event.data as { reason?: unknown }).reason === o.reason;
  if (!ours) {
    throw new CtlError('TNX_CTL_PORT_CHANGED', `${what} changed while it was released; look at it again (tunnox ctl events tail --aggregate ${stream.replace('.', ':')})`);
  }
  return { kind: local ? 'local' : 'public', port: o.port, client_id: o.clientId ?? null, stream, held_by: heldBy, holder, reserved_at: reservedAt, position, reason: o.reason };
}
