import { Writable } from 'node:stream';
import t from 'tap';
import type { ChangeNotice } from '../contracts/notices.js';
import { createLogger } from '../platform/logger.js';
import { createTestNats } from '../testkit/nats.js';
import { createNatsBus } from './nats.js';

const notices: ChangeNotice[] = [
  { kind: 'client-config', clientId: 42, version: 7 },
  { kind: 'public-mappings', version: 8 },
  { kind: 'projection', name: 'read-models', position: 9 },
];

async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (done()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function twoConnections(t: Test) {
  const a = await createTestNats();
  const b = await createTestNats();
  t.teardown(async () => {
    await a.cleanup();
    await b.cleanup();
  });
  // One prefix for both, unique to this test.
  return { a, b, prefix: a.subjectPrefix };
}
type Test = { teardown(fn: () => unknown): void };

t.test('two buses on separate connections see each other’s notices, in order', async (t) => {
  const { a, b, prefix } = await twoConnections(t);
  const busA = createNatsBus(a.nc, prefix);
  const busB = createNatsBus(b.nc, prefix);
  t.teardown(() => Promise.all([busA.close(), busB.close()]));
  const seenA: ChangeNotice[] = [];
  const seenB: ChangeNotice[] = [];
  const seenB2: ChangeNotice[] = [];
  busA.subscribe((n) => seenA.push(n));
  busB.subscribe((n) => seenB.push(n));
  busB.subscribe((n) => seenB2.push(n));
  await Promise.all([a.nc.flush(), b.nc.flush()]);

  for (const n of notices) await busA.publish(n);
  // Only one publisher's notices are ordered: let A's arrive before B publishes.
  await until(() => seenA.length === 3 && seenB.length === 3, "A's notices");
  await busB.publish({ kind: 'public-mappings', version: 10 });
  await until(() => seenA.length === 4 && seenB.length === 4 && seenB2.length === 4, 'notices on both buses');
  t.same(seenB.slice(0, 3), notices, 'B got what A published, in order');
  t.same(seenA.slice(0, 3), notices, 'A hears itself too');
  t.same(seenA[3], { kind: 'public-mappings', version: 10 }, 'A got what B published');
  t.same(seenB2, seenB, 'handlers on one bus share the subscription and all get everything');
});

t.test('notices travel on their documented subjects', async (t) => {
  const { a, b, prefix } = await twoConnections(t);
  const bus = createNatsBus(a.nc, prefix);
  t.teardown(() => bus.close());
  const subjects: string[] = [];
  const raw = b.nc.subscribe(`${prefix}.cfg.>`, { callback: (_err, msg) => void subjects.push(msg.subject) });
  t.teardown(() => raw.unsubscribe());
  await b.nc.flush();
  for (const n of notices) await bus.publish(n);
  await bus.publish({ kind: 'projection', name: 'odd.name *', position: 1 });
  await until(() => subjects.length === 4, 'raw messages');
  t.same(subjects, [
    `${prefix}.cfg.client.42`,
    `${prefix}.cfg.public`,
    `${prefix}.cfg.projection.read-models`,
    `${prefix}.cfg.projection.odd_name__`,
  ]);
});

t.test('malformed notices are dropped with a log line; valid ones still arrive', async (t) => {
  const { a, b, prefix } = await twoConnections(t);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const bus = createNatsBus(b.nc, prefix, createLogger({ level: 'warn' }, sink));
  t.teardown(() => bus.close());
  const seen: ChangeNotice[] = [];
  bus.subscribe((n) => seen.push(n));
  await b.nc.flush();

  a.nc.publish(`${prefix}.cfg.public`, 'not json');
  a.nc.publish(`${prefix}.cfg.client.1`, JSON.stringify({ kind: 'client-config', clientId: 'one', version: 1 }));
  a.nc.publish(`${prefix}.cfg.public`, JSON.stringify({ kind: 'something-else' }));
  a.nc.publish(`${prefix}.cfg.public`, JSON.stringify(notices[1]));
  await until(() => seen.length === 1, 'the valid notice');
  t.same(seen, [notices[1]]);
  t.equal(lines.filter((l) => l.includes('dropped')).length, 3, 'one log line per dropped message');
});

t.test('unsubscribe and close stop delivery and leave the connection open', async (t) => {
  const { a, b, prefix } = await twoConnections(t);
  const publisher = createNatsBus(a.nc, prefix);
  const bus = createNatsBus(b.nc, prefix);
  t.teardown(() => publisher.close());
  const kept: ChangeNotice[] = [];
  const dropped: ChangeNotice[] = [];
  bus.subscribe((n) => kept.push(n));
  const off = bus.subscribe((n) => dropped.push(n));
  await b.nc.flush();
  await publisher.publish(notices[0]!);
  await until(() => kept.length === 1 && dropped.length === 1, 'first notice');
  off();
  await publisher.publish(notices[1]!);
  await until(() => kept.length === 2, 'second notice');
  t.same(dropped, [notices[0]], 'nothing after unsubscribe');

  await bus.close();
  t.equal(b.nc.isClosed(), false, 'the connection belongs to the caller');
  await b.nc.flush();
  await publisher.publish(notices[2]!);
  // A witness on the same connection proves the notice was delivered while the closed bus stayed silent.
  const witness = createNatsBus(b.nc, prefix);
  t.teardown(() => witness.close());
  const seen: ChangeNotice[] = [];
  witness.subscribe((n) => seen.push(n));
  await b.nc.flush();
  await publisher.publish(notices[1]!);
  // Same publisher, so once the later notice reached this connection the earlier one had too.
  await until(() => seen.some((n) => n.kind === 'public-mappings'), 'witness');
  t.same(kept, [notices[0], notices[1]], 'nothing after close');
});

t.test('a bus with another prefix hears nothing', async (t) => {
  const { a, b, prefix } = await twoConnections(t);
  const publisher = createNatsBus(a.nc, prefix);
  const other = createNatsBus(b.nc, b.subjectPrefix);
  const same = createNatsBus(b.nc, prefix);
  t.teardown(() => Promise.all([publisher.close(), other.close(), same.close()]));
  const otherSeen: ChangeNotice[] = [];
  const sameSeen: ChangeNotice[] = [];
  other.subscribe((n) => otherSeen.push(n));
  same.subscribe((n) => sameSeen.push(n));
  await b.nc.flush();
  await publisher.publish(notices[0]!);
  await until(() => sameSeen.length === 1, 'notice on the same prefix');
  t.same(otherSeen, []);
});
