import t from 'tap';
import { jetstreamManager } from '@nats-io/jetstream';
import { claimNodeId, listNodes, openNodeBucket } from './node-registry.js';
import { createTestNats } from '../testkit/nats.js';
import { silentLogger } from '../platform/logger.js';

t.test('nodes race for distinct ids and release them', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = tn.streamName;
  const info = { control_address: '127.0.0.1:8080', started_at: new Date().toISOString(), version: 'test' };
  const regs = await Promise.all(
    [1, 2, 3].map(() => claimNodeId({ nc: tn.nc, bucket, ttlMs: 5000, info, logger: silentLogger() })),
  );
  const ids = regs.map((r) => r.nodeId).sort();
  t.same(ids, ['node-001', 'node-002', 'node-003']);
  const kv = await openNodeBucket(tn.nc, bucket, 5000);
  t.same((await listNodes(kv)).map((n) => n.node_id), ids);

  const second = regs.find((r) => r.nodeId === 'node-002')!;
  await second.release();
  t.same((await listNodes(kv)).map((n) => n.node_id), ['node-001', 'node-003']);
  const again = await claimNodeId({ nc: tn.nc, bucket, ttlMs: 5000, info, logger: silentLogger() });
  t.equal(again.nodeId, 'node-002', 'a released id is reused');
  for (const r of [...regs, again]) await r.release();
});

t.test('an entry that is not refreshed expires with the bucket TTL', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const kv = await openNodeBucket(tn.nc, tn.streamName, 1000);
  await kv.create('node-001', JSON.stringify({ node_id: 'node-001' }));
  // Bounded wait for the server's max_age expiry (no timing assertion: we only need it to happen).
  let free = false;
  for (let i = 0; i < 40 && !free; i++) {
    await new Promise((r) => setTimeout(r, 250));
    free = (await kv.get('node-001')) === null;
  }
  t.ok(free, 'expired entry is gone');
  const reg = await claimNodeId({
    nc: tn.nc, bucket: tn.streamName, ttlMs: 1000, logger: silentLogger(),
    info: { control_address: 'x', started_at: 'y', version: 'z' },
  });
  t.equal(reg.nodeId, 'node-001', 'the expired id can be claimed again');
  await reg.release();
});

t.test('a registration whose entry was taken over reports itself lost', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  let lost: Error | undefined;
  const reg = await claimNodeId({
    nc: tn.nc, bucket: tn.streamName, ttlMs: 900, logger: silentLogger(),
    info: { control_address: 'x', started_at: 'y', version: 'z' },
    onLost: (err) => (lost = err),
  });
  const kv = await openNodeBucket(tn.nc, tn.streamName, 900);
  await kv.put(reg.nodeId, JSON.stringify({ node_id: reg.nodeId, intruder: true }));
  for (let i = 0; i < 40 && !lost; i++) await new Promise((r) => setTimeout(r, 100));
  t.match(lost, { code: 'TNX_CLUSTER_NODE_ID_LOST' }, 'the heartbeat noticed the conflicting write');
  await reg.release();
});

t.test('only a create-if-absent conflict on every id means all ids are taken', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const info = { control_address: 'x', started_at: 'y', version: 'z' };
  const held = await Promise.all(
    [1, 2].map(() => claimNodeId({ nc: tn.nc, bucket: tn.streamName, ttlMs: 5000, info, logger: silentLogger(), maxNodes: 2 })),
  );
  await t.rejects(
    claimNodeId({ nc: tn.nc, bucket: tn.streamName, ttlMs: 5000, info, logger: silentLogger(), maxNodes: 2 }),
    { code: 'TNX_CLUSTER_NO_FREE_NODE_ID', message: 'all 2 node ids are taken' },
  );
  for (const r of held) await r.release();
});

t.test('a NATS error while claiming is reported as itself, not as "all ids taken"', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  // A real refusal by the server: the bucket's stream accepts no message as large as a node entry.
  await openNodeBucket(tn.nc, tn.streamName, 5000);
  const jsm = await jetstreamManager(tn.nc);
  await jsm.streams.update(`KV_${tn.streamName}`, { max_msg_size: 8 });
  const err = await claimNodeId({
    nc: tn.nc, bucket: tn.streamName, ttlMs: 5000, logger: silentLogger(),
    info: { control_address: '127.0.0.1:8080', started_at: new Date().toISOString(), version: 'test' },
  }).then(
    () => undefined,
    (e: unknown) => e as Error & { code?: string },
  );
  t.ok(err, 'the claim fails');
  t.equal(err?.code, 'TNX_CLUSTER_NODE_REGISTRY_FAILED');
  t.match(err?.message, /could not claim node-001 .*: .*maximum/i, 'the message carries the server\'s reason');
  t.notMatch(err?.message, /taken/);
});
