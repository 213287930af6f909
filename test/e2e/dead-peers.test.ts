import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { liveVisitor, startStreamingService } from '../tunnels/live.js';
import { startSilentProxy } from '../tunnels/silent-proxy.js';
import { canConnect, eventually, sleep, spawnTunnox, startServer, tempDir, type Proc } from './harness.js';
import { acceptedOn, fdCount, privateLoopback, tcpSockets } from './procfs.js';

/**
 * Dead and silent peers with real processes (issue 7).
 *
 * 1. `tunnox server` with its DEFAULT heartbeat (10 s interval, 30 s deadline): a `tunnox client`
 *    carrying a running tunnel is SIGSTOPped (alive, its kernel still ACKs, so TCP alone never
 *    notices). Within 45 s the API shows it offline, the visitor is reset, and the server's file
 *    descriptors are back to what they were before the agent came.
 * 2. The other way, with short settings (1 s, 3 s): the edge goes silent behind a relay that stops
 *    forwarding without closing anything; the agent gives up at the deadline and reconnects.
 */

const REQUIRED_MS = 45_000;

t.test('a SIGSTOPped agent is offline within 45 s with the default heartbeat, its tunnel reset and its fds reclaimed', async (t) => {
  const dir = await tempDir('tnx-deadpeers');
  t.teardown(() => dir.remove());
  const host = privateLoopback();
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--control-host', host], `key-${randomBytes(12).toString('hex')}`);
  t.teardown(() => server.proc.stop());
  const pid = server.proc.child.pid!;
  const { api } = server;
  const user = (await api('POST', '/api/v1/users', { username: 'stopped', email: 'stopped@example.com' })).body.user_id as number;
  const client = (await api('POST', '/api/v1/clients', { user_id: user, client_name: 'target' })).body as { client_id: number; auth_code: string };
  const service = await startStreamingService(t);
  const mapping = await api('POST', '/api/v1/mappings', { user_id: user, target_client_id: client.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(mapping.status, 201);
  const publicPort = mapping.body.public_port as number;
  await eventually('public port open', () => canConnect(publicPort));
  const ports = [server.controlPort, publicPort];
  // Settled: the probe connection above is gone, the read side idle.
  await sleep(1_000);
  const baseline = { fds: fdCount(pid), accepted: acceptedOn(pid, ports).length };
  t.equal(baseline.accepted, 0, 'no connection on the control or public port before the agent');

  const agent: Proc = spawnTunnox(['client', '--server', `${host}:${server.controlPort}`, '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'agent.json')]);
  t.teardown(async () => {
    agent.child.kill('SIGCONT');
    await agent.stop();
  });
  await eventually('agent online', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);
  await eventually('mapping active', async () => (await api('GET', `/api/v1/mappings/${mapping.body.mapping_id}`)).body.status === 'active', 30_000);
  const visitor = liveVisitor(publicPort);
  t.teardown(() => visitor.close());
  await visitor.flowing;
  // Control connection, the agent's tunnel half, the visitor: three connections accepted.
  t.equal(acceptedOn(pid, ports).length, 3, 'control, tunnel half and visitor held by the server');
  // TCP keepalive on the control connection, both ends: an idle socket with SO_KEEPALIVE has its
  // keepalive timer armed (timer 2 in /proc/net/tcp). (The tunnel and visitor are busy streaming.)
  await eventually('keepalive armed on the server side of the control connection', async () =>
    tcpSockets(pid).some((s) => s.state === '01' && s.localPort === server.controlPort && s.timer === 2), 15_000);
  await eventually('keepalive armed on the agent side of the control connection', async () =>
    tcpSockets(agent.child.pid!).some((s) => s.state === '01' && s.remotePort === server.controlPort && s.timer === 2), 15_000);

  const stoppedAt = Date.now();
  agent.child.kill('SIGSTOP');
  const gone = await server.proc.waitForLog((e) => e.msg === 'agent session closed' && e.clientId === client.client_id, REQUIRED_MS + 5_000);
  t.match(String(gone.reason), /heartbeat timeout, deadline 30000 ms/, 'closed by the heartbeat deadline');
  await eventually('offline through the API', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'offline', REQUIRED_MS);
  const offlineAfter = Date.now() - stoppedAt;
  t.ok(offlineAfter <= REQUIRED_MS, `offline through the API ${offlineAfter} ms after SIGSTOP (required: within 45 s)`);
  t.ok(offlineAfter >= 20_000, `not before the deadline (${offlineAfter} ms; the last heartbeat was at most 10 s before the stop)`);
  t.match(await visitor.ended, { how: 'reset' }, 'the visitor of the stopped agent was reset');
  await eventually('no connection left on the control or public port', async () => acceptedOn(pid, ports).length === 0, 10_000);
  const reclaimedAfter = Date.now() - stoppedAt;
  t.ok(reclaimedAfter <= REQUIRED_MS, `tunnel and control sockets reclaimed ${reclaimedAfter} ms after SIGSTOP`);
  await eventually(`server fds back to the baseline of ${baseline.fds}`, async () => fdCount(pid) <= baseline.fds, 10_000);

  // Woken up, the agent finds its session gone and logs in again.
  agent.child.kill('SIGCONT');
  await eventually('agent online again after SIGCONT', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);
});

t.test('an edge gone silent behind a relay: the agent gives up at the deadline and reconnects', async (t) => {
  const dir = await tempDir('tnx-silentedge');
  t.teardown(() => dir.remove());
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--heartbeat-interval', '1', '--heartbeat-timeout', '3'], `key-${randomBytes(12).toString('hex')}`);
  t.teardown(() => server.proc.stop());
  const { api } = server;
  const user = (await api('POST', '/api/v1/users', { username: 'relay', email: 'relay@example.com' })).body.user_id as number;
  const client = (await api('POST', '/api/v1/clients', { user_id: user, client_name: 'behind-relay' })).body as { client_id: number; auth_code: string };
  const proxy = await startSilentProxy(server.controlPort);
  t.teardown(() => proxy.close());
  const agent = spawnTunnox(['client', '--server', `127.0.0.1:${proxy.port}`, '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'agent.json')]);
  t.teardown(() => agent.stop());
  const first = await agent.waitForLog((e) => e.msg === 'connected to the edge');
  await eventually('agent online', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);
  await sleep(4_000);
  t.equal(agent.lines.filter((l) => l.includes('"connected to the edge"')).length, 1, 'a talking edge keeps the session past the deadline');

  const frozenAt = Date.now();
  proxy.freeze();
  const lost = await agent.waitForLog((e) => e.msg === 'control connection closed', 15_000);
  t.match(String(lost.reason), /heartbeat timeout, deadline 3000 ms/, "the agent applied the edge's announced deadline");
  const lostAfter = Date.now() - frozenAt;
  // The deadline runs from the edge's last byte, which came at most one 1 s interval before the freeze.
  t.ok(lostAfter >= 1_900 && lostAfter < 10_000, `the agent gave the silent edge up ${lostAfter} ms after the freeze`);
  const second = await agent.waitForLog((e) => e.msg === 'connected to the edge' && e.sessionId !== first.sessionId, 15_000);
  t.ok(second, 'reconnected through a new connection');
  t.equal(proxy.accepted, 2);
  await eventually('online on the new session', async () => {
    const c = (await api('GET', `/api/v1/clients/${client.client_id}`)).body;
    return c.status === 'online';
  }, 15_000);
});
