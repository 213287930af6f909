import t from 'tap';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { join } from 'node:path';
import { startServer, tempDir } from './harness.js';
import { tunnelScenario } from './scenario.js';

// JetStream mode: NATS JetStream event log (unique stream/subjects per run) + external PostgreSQL.
t.test('JetStream server: API, pushed config and TCP tunnels end to end', async (t) => {
  const database = await createTestDatabase('tnx_e2e', false);
  const stream = uniqueName('TNX_E2E').toUpperCase();
  t.teardown(async () => {
    const nc = await connect({ servers: TEST_NATS_URL });
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      if (s.config.name === stream || s.config.name.startsWith(`KV_${stream.toLowerCase()}`)) await jsm.streams.delete(s.config.name);
    }
    await nc.close();
    await database.drop();
  });
  await tunnelScenario(t, ['--nats', TEST_NATS_URL, '--database', database.url, '--stream', stream, '--subject-prefix', stream.toLowerCase()]);
});

// Two servers on one JetStream stream and one database (what a second node does): each runs the
// projector with its own consumer; both stay up, each event is applied once, both answer reads.
t.test('two JetStream servers share the event log and read models', async (t) => {
  const database = await createTestDatabase('tnx_e2e2', false);
  const stream = uniqueName('TNX_E2E2').toUpperCase();
  const dir = await tempDir('tnx-e2e-two');
  t.teardown(async () => {
    await dir.remove();
    const nc = await connect({ servers: TEST_NATS_URL });
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      if (s.config.name === stream || s.config.name.startsWith(`KV_${stream.toLowerCase()}`)) await jsm.streams.delete(s.config.name);
    }
    await nc.close();
    await database.drop();
  });
  const args = (n: number) => ['--data-dir', join(dir.path, `s${n}`), '--nats', TEST_NATS_URL, '--database', database.url, '--stream', stream, '--subject-prefix', stream.toLowerCase()];
  const a = await startServer(args(1), 'two-servers-admin-key-0123456789');
  t.teardown(() => a.proc.stop());
  const b = await startServer(args(2), 'two-servers-admin-key-0123456789');
  t.teardown(() => b.proc.stop());

  const ids: number[] = [];
  for (let i = 0; i < 6; i++) {
    const server = i % 2 === 0 ? a : b;
    const res = await server.api('POST', '/api/v1/users', { username: `u${i}`, email: `u${i}@example.com` });
    t.equal(res.status, 201, `user ${i} created through server ${i % 2 === 0 ? 'A' : 'B'}`);
    ids.push(res.body.user_id);
  }
  t.same(ids, [100000001, 100000002, 100000003, 100000004, 100000005, 100000006], 'one id sequence across both servers');
  t.equal((await b.api('GET', '/api/v1/users/100000001')).body.username, 'u0', 'B reads what A wrote');
  const aNode = await a.proc.waitForLog((e) => e.msg === 'tunnox server ready');
  const bNode = await b.proc.waitForLog((e) => e.msg === 'tunnox server ready');
  t.not(aNode.nodeId, bNode.nodeId, `distinct node ids (${aNode.nodeId}, ${bNode.nodeId})`);
  const nodes = await b.api('GET', '/api/v1/nodes');
  t.equal(nodes.status, 200);
  t.same(nodes.body.nodes.map((n: { node_id: string }) => n.node_id), [aNode.nodeId, bNode.nodeId].sort(), 'GET /api/v1/nodes lists both live nodes');
  t.match(await a.api('GET', `/api/v1/nodes/${String(bNode.nodeId)}`), { status: 200, body: { node_id: bNode.nodeId, addresses: { control: /^127\.0\.0\.1:/ }, connected_agents: 0 } });
  t.equal(a.proc.child.exitCode, null, 'A still running');
  t.equal(b.proc.child.exitCode, null, 'B still running');
  t.equal(await b.proc.stop(), 0);
  t.equal(await a.proc.stop(), 0);
});
