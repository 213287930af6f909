import t from 'tap';
import { jetstreamManager } from '@nats-io/jetstream';
import { claimNodeId, getNode, listNodes, openNodeBucket } from './node-registry.js';
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

t.test('entries carry addresses and the counts of the latest heartbeat; an older entry reads with defaults', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const bucket = tn.streamName;
  let stats: { connected_agents: number; active_tunnels: number } | undefined;
  let calls = 0;
  const reg = await claimNodeId({
    nc: tn.nc, bucket, ttlMs: 900, logger: silentLogger(),
    info: { control_address: '127.0.0.1:8080', bridge_address: '127.0.0.1:50052', advertise_host: 'edge.example', started_at: 's', version: 'v' },
    stats: () => {
      calls++;
      if (calls === 3) throw new Error('stats not ready');
      return stats;
    },
  });
  t.teardown(() => reg.release());
  const kv = await openNodeBucket(tn.nc, bucket, 900);
  t.match(await getNode(kv, reg.nodeId), {
    node_id: 'node-001', control_address: '127.0.0.1:8080', bridge_address: '127.0.0.1:50052', advertise_host: 'edge.example',
    connected_agents: 0, active_tunnels: 0,
  }, 'counts start at 0 while the edge is not up');
  stats = { connected_agents: 2000, active_tunnels: 17 };
  for (let i = 0; i < 50 && (await getNode(kv, reg.nodeId))?.connected_agents !== 2000; i++) await new Promise((r) => setTimeout(r, 100));
  t.match(await getNode(kv, reg.nodeId), { connected_agents: 2000, active_tunnels: 17 }, 'the heartbeat carries the counts');
  for (let i = 0; i < 50 && calls < 4; i++) await new Promise((r) => setTimeout(r, 100));
  t.match(await getNode(kv, reg.nodeId), { connected_agents: 2000 }, 'a failing stats read keeps the previous counts and the heartbeat');

  await kv.put('node-002', JSON.stringify({ node_id: 'node-002', control_address: 'x:1', started_at: 's', version: 'old' }));
  await kv.put('node-003', JSON.stringify({ node_id: 'node-004', control_address: 'x:1', started_at: 's', version: 'old' }));
  await kv.put('node-005', 'not json');
  t.match(await getNode(kv, 'node-002'), { bridge_address: null, advertise_host: null, connected_agents: 0, active_tunnels: 0, heartbeat_at: null });
  t.equal(await getNode(kv, 'node-003'), undefined, 'an entry naming another node is not that node');
  t.same((await listNodes(kv)).map((n) => n.node_id), ['node-001', 'node-002'], 'unreadable entries are left out');
});

t.test('a listing taken while nodes heartbeat names every node once', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const info = { control_address: 'x', started_at: 'y', version: 'z' };
  // 300 ms heartbeats: listings overlap with writes to the keys they are reading. (The TTL leaves
  // room for a loaded machine: a heartbeat that came too late would expire a node for real.)
  const regs = await Promise.all([1, 2, 3].map(() => claimNodeId({ nc: tn.nc, bucket: tn.streamName, ttlMs: 900, info, logger: silentLogger() })));
  t.teardown(() => Promise.all(regs.map((r) => r.release())));
  const kv = await openNodeBucket(tn.nc, tn.streamName, 900);
  const listings: string[][] = [];
  for (let i = 0; i < 60; i++) {
    listings.push((await listNodes(kv)).map((n) => n.node_id));
    await new Promise((r) => setTimeout(r, 15));
  }
  t.same(listings.filter((l) => l.join() !== 'node-001,node-002,node-003'), [], 'no listing repeats or misses a node');
});
