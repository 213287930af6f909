import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { handleCommand, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { ConflictError, DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';
import { portDecider } from './port.decider.js';

/** Inclusive range of public ports the edge may open for public mappings. */
export interface PortRange {
  min: number;
  max: number;
}

export function portStream(port: number): string {
  return streamName(AGGREGATES.publicPort, port);
}

async function decidePort(
  store: EventStore,
  command: Parameters<typeof portDecider.decide>[0],
  meta: CommandMetadata,
): Promise<{ position: number }> {
  // A port's state is its last event (reserved by X, or released), so one read decides whatever the
  // port's reserve/release history: allocation cost does not grow with churn.
  const res = await handleCommand(store, portStream(command.data.port), portDecider, command, meta, { lastEventOnly: true });
  return { position: res.position };
}

export function reservePublicPort(store: EventStore, input: { port: number; mappingId: number }, meta: CommandMetadata): Promise<{ position: number }> {
  return decidePort(store, { type: 'ReservePublicPort', data: { port: input.port, mapping_id: input.mappingId } }, meta);
}

/** Releases the port if `mappingId` holds it; a no-op when it is already free. `reason`: an operator's, recorded. */
export function releasePublicPort(store: EventStore, input: { port: number; mappingId: number; reason?: string }, meta: CommandMetadata): Promise<{ position: number }> {
  const reason = input.reason === undefined ? {} : { reason: input.reason };
  return decidePort(store, { type: 'ReleasePublicPort', data: { port: input.port, mapping_id: input.mappingId, ...reason } }, meta);
}

function isTaken(err: unknown): boolean {
  // ConflictError: the port stream is being fought over right now; treat it as taken and move on.
  return (err instanceof DomainError && err.code === DOMAIN_ERRORS.portInUse) || err instanceof ConflictError;
}

/**
 * Reserves the lowest free port of the range for the mapping, trying candidates in order until a
 * reservation succeeds. Each candidate costs one last-event read (independent of that port's
 * history), so the cost grows only with the number of ports held right now below the first free one.
 */
export async function reserveFirstFreePort(
  store: EventStore,
  input: { range: PortRange; mappingId: number },
  meta: CommandMetadata,
): Promise<{ port: number; position: number }> {
  const { min, max } = input.range;
  for (let port = min; port <= max; port++) {
    try {
      const { position } = await reservePublicPort(store, { port, mappingId: input.mappingId }, meta);
      return { port, position };
    } catch (err) {
      if (isTaken(err)) continue;
      throw err;
    }
  }
  // A conflict with the current state, not a bad request: the same command succeeds once ports are released.
  throw new DomainError(DOMAIN_ERRORS.portRangeExhausted, `no free public port in ${min}-${max}`, { details: { field: 'public_port' } });
}
