import t from 'tap';
import { join } from 'node:path';
import { eventually, heldTransfer, spawnTunnox, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';

// Failure and drain in a cluster of role processes (projector, api, three edges on 127.0.0.1-3):
// the edge holding the target agent is killed with -9 mid-transfer, then the edge it moved to is
// drained with SIGTERM mid-transfer.
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const MiB = 1024 * 1024;
const HELD = 8;

t.test('kill -9 and drain of the edge holding the target agent', async (t) => {
  const dir = await tempDir('tnx-cluster-failover-');
  t.teardown(() => dir.remove());
  // Presence sweeps every second here (30 s by default), so the dead edge's sessions close quickly.
  const cluster = await startCluster({ edges: HOSTS, name: 'tnx_cluster_fo', projectorArgs: ['--presence-sweep', '1'], edgeArgs: ['--drain-timeout', '30'] });
  t.teardown(() => cluster.close());
  const edges = cluster.edges;
  const byNode = (nodeId: string): EdgeHandle => edges.find((e) => e.nodeId === nodeId)!;
  const user = (await cluster.api('POST', '/api/v1/users', { username: 'fo', email: 'fo@example.com' })).body.user_id as number;
  const newClient = async (name: string) => (await cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body as { client_id: number; auth_code: string };
  const tgt = await newClient('target');
  const agents: Proc[] = [];
  t.teardown(() => Promise.all(agents.map((a) => a.stop())));
  const agent = (c: { client_id: number; auth_code: string }, servers: EdgeHandle[], name: string): Proc => {
    const p = spawnTunnox(['client', '--server', servers.map((e) => e.controlAddress).join(','), '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]);
    agents.push(p);
    return p;
  };
  const clientNode = async (id: number): Promise<string | undefined> => {
    const r = (await cluster.api('GET', `/api/v1/clients/${id}`)).body;
    return r.status === 'online' ? String(r.node_id) : undefined;
  };
  agent(tgt, edges, 'target');
  const first = byNode(await eventually('target online', () => clientNode(tgt.client_id), 30_000));

  const service = await startTransferTarget(16 * MiB);
  t.teardown(() => service.close());
  const pub = await cluster.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(pub.status, 201, 'public mapping created');
  const port = pub.body.public_port as number;
  await eventually('mapping active', async () => (await cluster.api('GET', `/api/v1/mappings/${pub.body.mapping_id}`)).body.status === 'active', 30_000);
  const entry = edges.find((e) => e !== first)!;

  // A second client whose agent knows only the edge about to die: it cannot move.
  const stuck = await newClient('stuck');
  agent(stuck, [first], 'stuck');
  await eventually('stuck agent online', async () => (await clientNode(stuck.client_id)) === first.nodeId, 30_000);

  // --- kill -9 ------------------------------------------------------------------------------------
  const running = Array.from({ length: HELD }, () => heldTransfer(port, 4 * MiB, entry.host));
  await Promise.all(running.map((h) => h.started));
  t.pass(`${HELD} transfers running through ${entry.nodeId} to the target agent on ${first.nodeId}`);
  const killedAt = Date.now();
  first.proc.child.kill('SIGKILL');
  const ends = await Promise.all(running.map(async (h) => {
    const e = await h.ended;
    return e.how === 'reset' ? e.code ?? 'reset' : `end, then ${await h.probe()}`;
  }));
  t.equal(ends.filter((e) => !e.endsWith('open')).length, HELD, `every transfer through the killed edge fails loudly: reset, never a clean end (${ends.join(', ')})`);
  const second = byNode(
    await eventually('target agent online on another edge', async () => {
      const n = await clientNode(tgt.client_id);
      return n && n !== first.nodeId ? n : undefined;
    }, 30_000),
  );
  t.pass(`the target agent moved from ${first.nodeId} to ${second.nodeId} ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill (issue goal: within 10 s)`);
  const fresh = await transfer(port, 8 * MiB, 60_000, entry.host);
  t.equal(fresh.received, service.results.get(fresh.id)?.sent, 'a fresh transfer after the move is byte-exact (download)');
  t.equal(service.results.get(fresh.id)?.received, fresh.sent, 'and byte-exact the other way (upload)');
  await eventually('the stuck agent\'s session, on the dead edge, is closed by the presence sweeper', async () => (await clientNode(stuck.client_id)) === undefined, 30_000);
  t.pass('the read model no longer shows a client online on the dead edge');

  // --- drain --------------------------------------------------------------------------------------
  const rest = edges.find((e) => e !== first && e !== second)!;
  const held = Array.from({ length: 4 }, () => heldTransfer(port, 4 * MiB, rest.host));
  await Promise.all(held.map((h) => h.started));
  t.pass(`4 transfers running through ${rest.nodeId} into the draining ${second.nodeId}`);
  second.proc.child.kill('SIGTERM');
  await eventually('target agent moved off the draining edge', async () => (await clientNode(tgt.client_id)) === rest.nodeId, 30_000);
  t.pass(`the target agent moved to ${rest.nodeId} while its tunnels still run on ${second.nodeId}`);
  for (const h of held) h.release();
  const drained = await Promise.all(held.map((h) => h.ended));
  const exact = drained.filter((e, i) => e.how === 'end' && e.sha === service.results.get(held[i]!.id)?.sent && service.results.get(held[i]!.id)?.received === held[i]!.sentSha);
  t.equal(exact.length, held.length, 'nothing in flight was truncated: every running transfer ends cleanly, byte-exact both ways');
  t.equal(await second.proc.exited, 0, 'the drained edge exits 0');
  const after = await transfer(port, 8 * MiB, 60_000, rest.host);
  t.equal(after.received, service.results.get(after.id)?.sent, `a fresh transfer reaches the agent on ${rest.nodeId}`);
});
