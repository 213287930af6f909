import t from 'tap';
import { join } from 'node:path';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { canConnect, clusterServerArgs, deleteStreams, eventually, heldTransfer, spawnTunnox, startServer, startTransferTarget, tempDir, type ServerHandle } from './harness.js';

/**
 * Drain with real processes: two JetStream servers (one cluster: shared stream, database and
 * cluster secret; public ports on 127.0.0.1 and 127.0.0.2) and one agent process given both. The
 * server holding the agent is sent SIGTERM while a transfer runs through it: the transfer
 * completes byte-exact, the agent moves to the other server at once, the drained server exits 0
 * once that tunnel has ended (before its drain timeout), and a fresh tunnel works.
 */
t.test('SIGTERM drains a server: the running transfer completes, the agent moves, the server exits 0', async (t) => {
  const database = await createTestDatabase('tnx_e2e_drain', false);
  const stream = uniqueName('TNX_E2E_DRAIN').toUpperCase();
  const dir = await tempDir('tnx-e2e-drain');
  t.teardown(async () => {
    await dir.remove();
    await deleteStreams(stream);
    await database.drop();
  });
  const apiKey = 'drain-e2e-admin-key-0123456789';
  const args = (n: number) => [
    ...clusterServerArgs({ dataDir: dir.path, database: database.url, stream, secret: 'drain-e2e-cluster-secret-0123456789' }, n),
    '--drain-timeout', '25',
  ];
  const servers = [await startServer(args(1), apiKey), await startServer(args(2), apiKey)] as [ServerHandle, ServerHandle];
  for (const s of servers) t.teardown(() => s.proc.stop());
  const nodeIds = await Promise.all(servers.map(async (s) => String((await s.proc.waitForLog((e) => e.msg === 'tunnox server ready')).nodeId)));

  const api = servers[0];
  const user = (await api.api('POST', '/api/v1/users', { username: 'drain', email: 'drain@example.com' })).body.user_id;
  const client = (await api.api('POST', '/api/v1/clients', { user_id: user, client_name: 'target' })).body;
  const size = 8 * 1024 * 1024;
  const service = await startTransferTarget(size);
  t.teardown(() => service.close());
  const mapping = await api.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: client.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(mapping.status, 201, 'public mapping created');
  const publicPort: number = mapping.body.public_port;

  const agent = spawnTunnox([
    'client', '--server', servers.map((s) => `127.0.0.1:${s.controlPort}`).join(','),
    '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'agent.json'),
  ]);
  t.teardown(() => agent.stop());
  // The agent starts on a random server of its list: the one it reached holds it.
  const first = await agent.waitForLog((e) => e.msg === 'connected to the edge');
  const h = nodeIds.indexOf(String(first.nodeId));
  t.ok(h >= 0, `the agent connected to ${String(first.nodeId)}`);
  const holder = servers[h]!;
  const other = servers[1 - h]!;
  const holderHost = `127.0.0.${h + 1}`;
  const otherHost = `127.0.0.${2 - h}`;
  await eventually('mapping active', async () => (await api.api('GET', `/api/v1/mappings/${mapping.body.mapping_id}`)).body.status === 'active');
  await eventually('public port open on both servers', async () => (await canConnect(publicPort, holderHost)) && (await canConnect(publicPort, otherHost)));

  const running = heldTransfer(publicPort, size / 2, holderHost);
  await running.started;
  holder.proc.child.kill('SIGTERM');
  await holder.proc.waitForLog((e) => e.msg === 'draining: no new sessions or tunnels; agents are moving to other edges');
  const moved = await agent.waitForLog((e) => e.msg === 'connected to the edge' && e.nodeId === nodeIds[1 - h]);
  t.ok(moved, `the agent moved to ${nodeIds[1 - h]}`);
  const sinceFirst = agent.lines.slice(agent.lines.findIndex((l) => l.includes('"connected to the edge"')) + 1);
  t.ok(sinceFirst.some((l) => l.includes('edge draining: connecting to the next edge now')), 'because it was told the edge drains');
  t.notOk(sinceFirst.some((l) => l.includes('"msg":"reconnecting"')), 'at once: no backoff on the way');
  t.equal(holder.proc.child.exitCode, null, 'the draining server waits for the running tunnel');
  t.notOk(await canConnect(holder.controlPort), 'the draining server takes no new connections');

  running.release();
  const end = await running.ended;
  t.equal(end.how, 'end', 'the transfer through the draining server ended cleanly');
  t.equal(end.sha, service.results.get(running.id)?.sent, 'visitor received exactly what the service sent (8 MiB, SHA-256)');
  t.equal(service.results.get(running.id)?.received, running.sentSha, 'the service received exactly what the visitor sent (8 MiB, SHA-256)');
  t.equal(await holder.proc.exited, 0, 'the drained server exits 0');
  t.ok(holder.proc.lines.some((l) => l.includes('drained: every tunnel has ended')), 'once its tunnels ended, before the drain timeout');

  const fresh = heldTransfer(publicPort, size / 2, otherHost);
  fresh.release();
  const freshEnd = await fresh.ended;
  t.equal(freshEnd.how, 'end', 'a fresh transfer through the other server');
  t.equal(freshEnd.sha, service.results.get(fresh.id)?.sent, 'byte-exact back (8 MiB)');
  t.equal(service.results.get(fresh.id)?.received, fresh.sentSha, 'and byte-exact there (8 MiB)');
  t.equal(await agent.stop(), 0);
  t.equal(await other.proc.stop(), 0);
});

