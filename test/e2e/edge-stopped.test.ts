import t from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { eventually, spawnTunnox, startServer, tempDir } from './harness.js';

/**
 * The edge itself goes silent (issue 7): `tunnox server --heartbeat-interval 1 --heartbeat-timeout
 * 3` is SIGSTOPped under a connected `tunnox client`. Its kernel still holds every connection open
 * (and even completes new handshakes into the listen backlog), so only the agent's deadline can
 * tell: the agent gives the session up about 3 s after the edge's last byte, while the edge is
 * still stopped, keeps trying, and is back online once the edge is continued.
 */

t.test('a SIGSTOPped edge: the agent detects it at the deadline and reconnects once it runs again', async (t) => {
  const dir = await tempDir('tnx-edgestopped');
  t.teardown(() => dir.remove());
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--heartbeat-interval', '1', '--heartbeat-timeout', '3'], `key-${randomBytes(12).toString('hex')}`);
  t.teardown(async () => {
    server.proc.child.kill('SIGCONT');
    await server.proc.stop();
  });
  const { api } = server;
  const user = (await api('POST', '/api/v1/users', { username: 'edgestop', email: 'edgestop@example.com' })).body.user_id as number;
  const client = (await api('POST', '/api/v1/clients', { user_id: user, client_name: 'waits' })).body as { client_id: number; auth_code: string };
  const agent = spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'agent.json')]);
  t.teardown(() => agent.stop());
  const first = await agent.waitForLog((e) => e.msg === 'connected to the edge');
  await eventually('online', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);

  const stoppedAt = Date.now();
  server.proc.child.kill('SIGSTOP');
  const lost = await agent.waitForLog((e) => e.msg === 'control connection closed', 15_000);
  const lostAfter = Date.now() - stoppedAt;
  t.match(String(lost.reason), /heartbeat timeout, deadline 3000 ms/);
  t.ok(lostAfter < 8_000, `the agent gave the stopped edge up ${lostAfter} ms after SIGSTOP, while it was still stopped`);
  // Still stopped: the agent's next login gets no answer (handshake timeout), and it keeps trying.
  await agent.waitForLog((e) => e.msg === 'cannot reach the edge', 20_000);
  t.pass('a login to the stopped edge times out instead of hanging');

  server.proc.child.kill('SIGCONT');
  const again = await agent.waitForLog((e) => e.msg === 'connected to the edge' && e.sessionId !== first.sessionId, 60_000);
  t.ok(again, 'reconnected once the edge runs again');
  await eventually('online again', async () => {
    const c = (await api('GET', `/api/v1/clients/${client.client_id}`)).body;
    return c.status === 'online';
  }, 30_000);
});
