import t from 'tap';
import { join } from 'node:path';
import { liveVisitor, startStreamingService } from '../tunnels/live.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';
import { eventually, freePort, spawnTunnox, tempDir } from './harness.js';
import { acceptedOn } from './procfs.js';

/**
 * A silent edge on the far side of the bridge (issue 7): a tunnel runs from a source agent on edge
 * 1 across the bridge to a target agent on edge 2, and edge 1 is SIGSTOPped. Its kernel keeps the
 * bridge's TCP connection open, so only edge 2's HTTP/2 pings (every 10 s, 5 s to answer) can tell:
 * edge 2 drops the connection, resets the tunnel's half it holds (the service sees a reset) and
 * frees its sockets, while the stopped edge never says a word.
 */

t.test('edge 2 reclaims a bridged tunnel whose caller edge went silent', async (t) => {
  const dir = await tempDir('tnx-bridge-silent');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({ edges: ['127.0.0.1', '127.0.0.2'], name: 'tnx_bridge_silent', edgeArgs: ['--heartbeat-interval', '1', '--heartbeat-timeout', '3'] });
  t.teardown(() => cluster.close());
  const [e1, e2] = cluster.edges as [EdgeHandle, EdgeHandle];
  t.teardown(() => void e1.proc.child.kill('SIGCONT'));
  const { api } = cluster;
  const user = (await api('POST', '/api/v1/users', { username: 'bridge', email: 'bridge@example.com' })).body.user_id as number;
  const mk = async (name: string) => (await api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body as { client_id: number; auth_code: string };
  const src = await mk('source');
  const tgt = await mk('target');
  const agent = (c: { client_id: number; auth_code: string }, e: EdgeHandle, name: string) => {
    const p = spawnTunnox(['client', '--server', e.controlAddress, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]);
    t.teardown(() => p.stop());
    return p;
  };
  agent(src, e1, 'source');
  agent(tgt, e2, 'target');
  for (const [c, e] of [[src, e1], [tgt, e2]] as const) {
    await eventually(`client ${c.client_id} online on ${e.nodeId}`, async () => {
      const r = (await api('GET', `/api/v1/clients/${c.client_id}`)).body;
      return r.status === 'online' && r.node_id === e.nodeId;
    }, 30_000);
  }
  const service = await startStreamingService(t);
  const localPort = await freePort();
  const m = await api('POST', '/api/v1/mappings', { user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort });
  t.equal(m.status, 201);
  await eventually('mapping active', async () => (await api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active', 30_000);
  const visitor = await eventually('a flowing transfer across the bridge', async () => {
    const v = liveVisitor(localPort);
    try {
      await v.flowing;
      return v;
    } catch {
      v.close();
      return undefined;
    }
  }, 30_000);
  t.teardown(() => visitor.close());
  const e2pid = e2.proc.child.pid!;
  // On edge 2: the target agent's control connection and its tunnel half.
  t.equal(acceptedOn(e2pid, [e2.controlPort]).length, 2, 'edge 2 holds the target control connection and tunnel half');

  const stoppedAt = Date.now();
  e1.proc.child.kill('SIGSTOP');
  t.equal(await service.outcomes[service.outcomes.length - 1], 'reset', "the service's connection is reset, never ended cleanly");
  const after = Date.now() - stoppedAt;
  t.ok(after <= 25_000, `edge 2 reset the tunnel ${after} ms after edge 1 went silent (ping every 10 s, 5 s to answer)`);
  await eventually('edge 2 freed the tunnel half', async () => acceptedOn(e2pid, [e2.controlPort]).length === 1, 10_000);
  e1.proc.child.kill('SIGCONT');
});
