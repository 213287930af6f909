import { buildEnvelope, noteAppended, type CommandMetadata } from '../eventstore/command.js';
import type { Decider } from './decider.js';
import type { EventStore, ExpectedRevision } from '../eventstore/types.js';

/**
 * Decides against a state the caller already knows (no read) and appends with the given
 * expectation. For create-if-absent ('no_stream') and unconditional facts ('any'), where reading
 * the stream first would only cost a round trip. Returns null when the decider decided nothing.
 */
export async function decideAndAppend<State, Cmd>(
  store: EventStore,
  stream: string,
  decider: Decider<State, Cmd>,
  state: State,
  command: Cmd,
  meta: CommandMetadata,
  expectedRevision: ExpectedRevision,
): Promise<{ position: number } | null> {
  const events = decider.decide(command, state);
  if (events.length > 1) throw new Error(`decider for ${stream} returned ${events.length} events; at most one is allowed`);
  const event = events[0];
  if (!event) return null;
  const res = await store.append(stream, buildEnvelope(stream, event, meta), { expectedRevision });
  noteAppended(meta, stream);
  return { position: res.position };
}
