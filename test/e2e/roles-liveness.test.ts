import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startCluster } from './cluster-harness.js';
import { eventually, spawnTunnox, tempDir } from './harness.js';

/**
 * The same liveness flags on the role processes of a cluster (issue 7): `tunnox edge
 * --heartbeat-interval 1 --heartbeat-timeout 3` gives a SIGSTOPped agent up at its 3 s deadline
 * (announced to the agent), and `tunnox projector --anonymous-ttl 3s` then expires that anonymous
 * client through ClientExpired, attributed to the projector, caused by the edge's disconnect.
 */

t.test('cluster roles: the edge drops a stopped agent at its deadline, the projector expires it after the TTL', async (t) => {
  const dir = await tempDir('tnx-roles-liveness');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({
    edges: ['127.0.0.1'],
    name: 'tnx_roles_live',
    edgeArgs: ['--heartbeat-interval', '1', '--heartbeat-timeout', '3'],
    projectorArgs: ['--anonymous-ttl', '3s'],
  });
  t.teardown(() => cluster.close());
  const edge = cluster.edges[0]!;
  const credentials = join(dir.path, 'anon.json');
  const agent = spawnTunnox(['client', '--server', `127.0.0.1:${edge.controlPort}`, '--credentials', credentials]);
  t.teardown(async () => {
    agent.child.kill('SIGCONT');
    await agent.stop();
  });
  await agent.waitForLog((e) => e.msg === 'connected to the edge');
  const id = (JSON.parse(await readFile(credentials, 'utf8')) as { client_id: number }).client_id;
  await eventually('online', async () => (await cluster.api('GET', `/api/v1/clients/${id}`)).body.status === 'online', 30_000);
  // Heartbeats every second keep it online well past the 3 s deadline and the 3 s TTL.
  await new Promise((r) => setTimeout(r, 5_000));
  t.equal((await cluster.api('GET', `/api/v1/clients/${id}`)).body.status, 'online', 'a live agent neither times out nor expires');

  const stoppedAt = Date.now();
  agent.child.kill('SIGSTOP');
  const closed = await edge.proc.waitForLog((e) => e.msg === 'agent session closed' && e.clientId === id, 20_000);
  t.match(String(closed.reason), /heartbeat timeout, deadline 3000 ms/, 'the edge role applied --heartbeat-timeout');
  const closedAfter = Date.now() - stoppedAt;
  t.ok(closedAfter < 8_000, `session closed ${closedAfter} ms after SIGSTOP`);
  await eventually('gone from the API (expired)', async () => (await cluster.api('GET', `/api/v1/clients/${id}`)).status === 404, 30_000);
  const events = (await cluster.api('GET', `/api/v1/events?aggregate=client:${id}`)).body.events as { type: string; causation_id: string | null; actor: { kind: string; id: string } }[];
  t.same(events.map((e) => e.type), ['ClientRegistered', 'ClientExpired']);
  t.match(events[1]!.actor, { kind: 'system', id: /^projector-p/ }, 'expired by the projector role');
  const sessions = (await cluster.api('GET', `/api/v1/events?aggregate=client-session:${id}`)).body.events as { type: string; id: string }[];
  t.equal(events[1]!.causation_id, sessions[sessions.length - 1]!.id, 'caused by the disconnect the edge recorded');
});
