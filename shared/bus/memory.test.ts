import t from 'tap';
import type { ChangeNotice } from '../contracts/notices.js';
import { createMemoryBus } from './memory.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const notices: ChangeNotice[] = [
  { kind: 'client-config', clientId: 42, version: 7 },
  { kind: 'public-mappings', version: 8 },
  { kind: 'projection', name: 'read-models', position: 9 },
];

t.test('every subscriber gets every notice, in order, never on the publisher stack', async (t) => {
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  const a: ChangeNotice[] = [];
  const b: ChangeNotice[] = [];
  bus.subscribe((n) => a.push(n));
  bus.subscribe((n) => b.push(n));
  for (const n of notices) void bus.publish(n);
  t.same(a, [], 'nothing delivered synchronously');
  await tick();
  t.same(a, notices);
  t.same(b, notices);
});

t.test('unsubscribe stops delivery, also for notices already published', async (t) => {
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  const seen: ChangeNotice[] = [];
  const off = bus.subscribe((n) => seen.push(n));
  await bus.publish(notices[0]!);
  await tick();
  void bus.publish(notices[1]!);
  off();
  await tick();
  t.same(seen, [notices[0]]);
});

t.test('a throwing handler does not keep the notice from the others', async (t) => {
  const bus = createMemoryBus();
  t.teardown(() => bus.close());
  const seen: ChangeNotice[] = [];
  bus.subscribe(() => {
    throw new Error('handler bug');
  });
  bus.subscribe((n) => seen.push(n));
  await bus.publish(notices[1]!);
  await tick();
  t.same(seen, [notices[1]]);
});

t.test('after close nothing is delivered and publish is a no-op', async (t) => {
  const bus = createMemoryBus();
  const seen: ChangeNotice[] = [];
  bus.subscribe((n) => seen.push(n));
  await bus.close();
  await bus.publish(notices[0]!);
  bus.subscribe((n) => seen.push(n))();
  await tick();
  t.same(seen, []);
});
