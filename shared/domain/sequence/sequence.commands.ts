import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import type { SequenceName } from '../../contracts/ids.js';
import { handleCommand, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { sequenceDecider } from './sequence.decider.js';

/**
 * Every concurrent allocator that loses a race retries against fresh state; each lost race means
 * someone else got an id, so a contender needs at most (concurrent allocations) retries. The bound
 * is generous because the API may receive many creates at once; exhausting it is a 409.
 */
const ALLOCATION_RETRIES = 200;

export interface AllocatedId {
  id: number;
  position: number;
}

/**
 * Hands out the next id of a sequence. Ids are not reused: if the caller crashes (or its command is
 * rejected) after allocation, that id stays unused — a gap, which is acceptable for these ids.
 */
export async function allocateId(store: EventStore, sequence: SequenceName, meta: CommandMetadata): Promise<AllocatedId> {
  const res = await handleCommand(
    store,
    streamName(AGGREGATES.sequence, sequence),
    sequenceDecider,
    { type: 'AllocateId', data: { sequence } },
    meta,
    // The state is the last id handed out: reading only the last event keeps allocation O(1)
    // however many ids the sequence has issued.
    { maxRetries: ALLOCATION_RETRIES, lastEventOnly: true },
  );
  const id = res.state.last;
  if (id === null) throw new Error(`sequence ${sequence}: allocation appended nothing`);
  return { id, position: res.position };
}
