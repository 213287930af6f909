import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { handleCommand, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { localPortDecider, type LocalPortCommand } from './localport.decider.js';

/** `localport.<client>_<port>`: `_` keeps the pair one NATS subject token (assertStreamName). */
export function localPortStream(clientId: number, port: number): string {
  return streamName(AGGREGATES.localPort, `${clientId}_${port}`);
}

export interface LocalPortInput {
  clientId: number;
  port: number;
  mappingId: number;
}

async function decideLocalPort(store: EventStore, command: LocalPortCommand, meta: CommandMetadata): Promise<{ position: number }> {
  // The state is the last event (reserved by X, or released): one read whatever the history.
  const stream = localPortStream(command.data.client_id, command.data.port);
  const res = await handleCommand(store, stream, localPortDecider, command, meta, { lastEventOnly: true });
  return { position: res.position };
}

/** Reserves the local port of a source client for the mapping; TNX_LOCAL_PORT_TAKEN (409) when another mapping holds it. */
export function reserveLocalPort(store: EventStore, input: LocalPortInput, meta: CommandMetadata): Promise<{ position: number }> {
  return decideLocalPort(store, { type: 'ReserveLocalPort', data: { client_id: input.clientId, port: input.port, mapping_id: input.mappingId } }, meta);
}

/** Releases the local port if `mappingId` holds it; a no-op when it is already free. */
export function releaseLocalPort(store: EventStore, input: LocalPortInput & { reason?: string }, meta: CommandMetadata): Promise<{ position: number }> {
  const reason = input.reason === undefined ? {} : { reason: input.reason };
  return decideLocalPort(store, { type: 'ReleaseLocalPort', data: { client_id: input.clientId, port: input.port, mapping_id: input.mappingId, ...reason } }, meta);
}
