import t from 'tap';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { canConnect, clusterServerArgs, deleteStreams, eventually, spawnTunnox, startServer, startTransferTarget, tempDir, transfer, type ServerHandle } from './harness.js';
import { tunnelScenario } from './scenario.js';

// JetStream mode: NATS JetStream event log (unique stream/subjects per run) + external PostgreSQL.
t.test('JetStream server: API, pushed config and TCP tunnels end to end', async (t) => {
  const database = await createTestDatabase('tnx_e2e', false);
  const stream = uniqueName('TNX_E2E').toUpperCase();
  t.teardown(async () => {
    await deleteStreams(stream);
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
    await deleteStreams(stream);
    await database.drop();
  });
  const args = (n: number) => clusterServerArgs({ dataDir: dir.path, database: database.url, stream, secret: 'two-servers-cluster-secret-0123456789' }, n);
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
  t.match(nodes.body.nodes[0], { addresses: { bridge: /^127\.0\.0\.1:\d+$/ } }, 'each node registers its bridge address');

  // Tunnels across servers: the source agent on A, the target agent on B.
  const user = ids[0]!;
  const clients: Array<{ client_id: number; auth_code: string }> = [];
  for (const name of ['source', 'target']) clients.push((await a.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body);
  const [src, tgt] = clients as [{ client_id: number; auth_code: string }, { client_id: number; auth_code: string }];
  const agentArgs = (c: { client_id: number; auth_code: string }, server: ServerHandle, name: string) =>
    ['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)];
  const sourceAgent = spawnTunnox(agentArgs(src, a, 'source'));
  t.teardown(() => sourceAgent.stop());
  const targetAgent = spawnTunnox(agentArgs(tgt, b, 'target'));
  t.teardown(() => targetAgent.stop());
  for (const c of clients) await eventually(`client ${c.client_id} online`, async () => (await a.api('GET', `/api/v1/clients/${c.client_id}`)).body.status === 'online');
  const size = 8 * 1024 * 1024;
  const service = await startTransferTarget(size);
  t.teardown(() => service.close());
  const localPort = await freePort();
  const c2c = await a.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  t.equal(c2c.status, 201, 'client-to-client mapping across servers created');
  await eventually('mapping active on both agents', async () => (await b.api('GET', `/api/v1/mappings/${c2c.body.mapping_id}`)).body.status === 'active');
  const check = async (port: number, what: string) => {
    const results = await Promise.all(Array.from({ length: 8 }, () => transfer(port, size)));
    const exact = results.filter((r) => r.received === service.results.get(r.id)?.sent && service.results.get(r.id)?.received === r.sent).length;
    t.equal(exact, results.length, `${what}: 8 connections x 8 MiB each way, byte-exact (SHA-256 at both ends)`);
  };
  await check(localPort, 'client-to-client, source on A, target on B');
  const pub = await a.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(pub.status, 201, 'public mapping created');
  await eventually('public port open on A', () => canConnect(pub.body.public_port, '127.0.0.1'));
  await check(pub.body.public_port, 'public mapping entered through A, target agent on B');

  t.equal(await targetAgent.stop(), 0);
  t.equal(await sourceAgent.stop(), 0);
  t.equal(a.proc.child.exitCode, null, 'A still running');
  t.equal(b.proc.child.exitCode, null, 'B still running');
  t.equal(await b.proc.stop(), 0);
  t.equal(await a.proc.stop(), 0);
});
