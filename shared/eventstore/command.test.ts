import t, { type Test } from 'tap';
import type { DomainEvent } from '../contracts/events.js';
import { ConflictError, PreconditionFailedError } from '../platform/errors.js';
import { createTestDatabase } from '../testkit/pg.js';
import type { Decider } from '../domain/decider.js';
import { handleCommand, type CommandMetadata } from './command.js';
import { PostgresEventStore } from './postgres.js';
import type { EventStore } from './types.js';

// A tiny counter aggregate: Allocate hands out the next id, Peek decides nothing.
type CounterCommand = { type: 'Allocate' } | { type: 'Peek' };
interface CounterState {
  allocated: number;
}
const counter: Decider<CounterState, CounterCommand> = {
  initialState: () => ({ allocated: 0 }),
  evolve: (state, event) => (event.type === 'IdAllocated' ? { allocated: event.data.id } : state),
  decide: (command, state): DomainEvent[] =>
    command.type === 'Allocate' ? [{ type: 'IdAllocated', data: { sequence: 'counter', id: state.allocated + 1 } }] : [],
};

const STREAM = 'sequence.counter';
const meta: CommandMetadata = { actor: { kind: 'system', id: 'command-test' }, correlationId: 'corr-1' };

async function setup(t: Test) {
  const tdb = await createTestDatabase('tnx_cmd');
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool });
  t.teardown(async () => {
    await store.close();
    await tdb.drop();
  });
  return store;
}

/**
 * Delegates to a real store, but holds the first `parties` readStream calls until all of them have
 * read, so that many commands decide on the same state and all but one must lose the append race.
 */
function withReadBarrier(store: EventStore, parties: number): { store: EventStore; reads: () => number } {
  let reads = 0;
  let open!: () => void;
  const barrier = new Promise<void>((resolve) => (open = resolve));
  return {
    reads: () => reads,
    store: {
      kind: store.kind,
      append: (...args) => store.append(...args),
      readStream: async (stream) => {
        const result = await store.readStream(stream);
        reads++;
        if (reads === parties) open();
        if (reads <= parties) await barrier;
        return result;
      },
      readLastEvent: (stream) => store.readLastEvent(stream),
      readAll: (...args) => store.readAll(...args),
      headPosition: () => store.headPosition(),
      subscribe: (options) => store.subscribe(options),
      close: () => store.close(),
    },
  };
}

t.test('given no events, when Allocate, then IdAllocated 1 is appended', async (t) => {
  const store = await setup(t);
  const result = await handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta);
  t.equal(result.event?.type, 'IdAllocated');
  t.same(result.event?.data, { sequence: 'counter', id: 1 });
  t.same(result.state, { allocated: 1 });
  t.equal(result.version, 1);
  t.match(result.event, { stream: STREAM, version: 1, position: result.position, aggregate_type: 'sequence', aggregate_id: 'counter' });
  t.match(result.event, { actor: meta.actor, correlation_id: 'corr-1', causation_id: null });

  const read = await store.readStream(STREAM);
  t.same(read.events, [result.event], 'the stored event is the one returned');
  t.equal(read.revision, result.revision);

  const second = await handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta);
  t.same(second.event?.data, { sequence: 'counter', id: 2 });
  t.equal(second.version, 2);
});

t.test('given events, when the decider decides nothing, then nothing is appended', async (t) => {
  const store = await setup(t);
  const allocated = await handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta);
  const head = await store.headPosition();
  const peek = await handleCommand(store, STREAM, counter, { type: 'Peek' }, meta);
  t.equal(peek.event, null);
  t.same(peek.state, { allocated: 1 });
  t.equal(peek.version, 1);
  t.equal(peek.position, allocated.position, 'position of the last event in the stream');
  t.equal(peek.revision, allocated.revision);
  t.equal(await store.headPosition(), head, 'no append');

  const empty = await handleCommand(store, 'sequence.empty', counter, { type: 'Peek' }, meta);
  t.same(empty, { event: null, state: { allocated: 0 }, revision: null, version: 0, position: 0 });
});

t.test('two commands deciding on the same state both succeed, in order: the loser re-reads', async (t) => {
  const real = await setup(t);
  const { store, reads } = withReadBarrier(real, 2);
  const [a, b] = await Promise.all([
    handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta),
    handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta),
  ]);
  t.equal(reads(), 3, 'both read version 0, the loser read once more');
  t.same([a.event?.data, b.event?.data].map((d) => (d as { id: number }).id).sort(), [1, 2], 'distinct ids, none lost');
  const read = await real.readStream(STREAM);
  t.same(read.events.map((e) => [e.version, (e.data as { id: number }).id]), [[1, 1], [2, 2]]);
});

t.test('many parallel commands all land with consecutive ids', async (t) => {
  const real = await setup(t);
  const { store } = withReadBarrier(real, 5);
  const results = await Promise.all(Array.from({ length: 5 }, () => handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta)));
  t.same(results.map((r) => (r.event?.data as { id: number }).id).sort(), [1, 2, 3, 4, 5]);
  t.same((await real.readStream(STREAM)).events.map((e) => e.version), [1, 2, 3, 4, 5]);
});

t.test('when retries are exhausted, the loser gets TNX_CONFLICT_RETRIES_EXHAUSTED and nothing extra is stored', async (t) => {
  const real = await setup(t);
  const { store } = withReadBarrier(real, 2);
  const results = await Promise.allSettled([
    handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta, { maxRetries: 0 }),
    handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta, { maxRetries: 0 }),
  ]);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.equal(failed.length, 1);
  t.type(failed[0]?.reason, ConflictError);
  t.equal((failed[0]?.reason as ConflictError).code, 'TNX_CONFLICT_RETRIES_EXHAUSTED');
  t.equal((await real.readStream(STREAM)).events.length, 1);
});

t.test('an expectedVersion that does not match is a PreconditionFailedError and appends nothing', async (t) => {
  const store = await setup(t);
  await handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta);
  const head = await store.headPosition();
  await t.rejects(handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta, { expectedVersion: 0 }), {
    constructor: PreconditionFailedError,
    code: 'TNX_PRECONDITION_FAILED',
  });
  t.equal(await store.headPosition(), head);
  const ok = await handleCommand(store, STREAM, counter, { type: 'Allocate' }, meta, { expectedVersion: 1 });
  t.equal(ok.version, 2, 'a matching expectedVersion appends');
});
