import t from 'tap';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { canConnect, eventually, spawnTunnox, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';

// The cluster as an operator runs it: one projector, one API and three edges on 127.0.0.1-3, each a
// process of its own; the edges run from NATS alone.
const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const SIZE = 8 * 1024 * 1024;
const CONNECTIONS = 20;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('a cluster of role processes: three edges, tunnels across them, kick-old', async (t) => {
  const dir = await tempDir('tnx-cluster-');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({ edges: HOSTS });
  t.teardown(() => cluster.close());
  const [e1, e2, e3] = cluster.edges as [EdgeHandle, EdgeHandle, EdgeHandle];

  for (const e of cluster.edges) {
    t.notOk(e.args.some((a) => a.includes('postgres')), `${e.nodeId} was started without a database URL`);
    t.equal(e.controlAddress.split(':')[0], e.host, `${e.nodeId} listens on ${e.host}`);
  }
  const nodes = await eventually('three nodes listed', async () => {
    const r = await cluster.api('GET', '/api/v1/nodes');
    return r.status === 200 && r.body.nodes.length === 3 ? r.body.nodes : undefined;
  });
  t.same(
    nodes.map((n: { node_id: string }) => n.node_id).sort(),
    cluster.edges.map((e) => e.nodeId).sort(),
    'GET /api/v1/nodes (from the API process) lists the three edges',
  );
  for (const e of cluster.edges) {
    t.match((await cluster.api('GET', `/api/v1/nodes/${e.nodeId}`)).body, {
      node_id: e.nodeId,
      addresses: { control: `${e.host}:${e.controlPort}`, bridge: new RegExp(`^${e.host.replace(/\./g, '\\.')}:\\d+$`) },
    }, `${e.nodeId} advertises its control and bridge addresses on ${e.host}`);
  }

  const user = (await cluster.api('POST', '/api/v1/users', { username: 'ops', email: 'ops@example.com' })).body.user_id as number;
  t.ok(user, 'user created through the API process');
  const client = async (name: string): Promise<Client> => (await cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const src = await client('source');
  const tgt = await client('target');
  const agents: Proc[] = [];
  t.teardown(() => Promise.all(agents.map((a) => a.stop())));
  const agent = (c: Client, edge: EdgeHandle, name: string): Proc => {
    const p = spawnTunnox(['client', '--server', edge.controlAddress, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]);
    agents.push(p);
    return p;
  };
  const online = (c: Client, edge: EdgeHandle) =>
    eventually(`client ${c.client_id} online on ${edge.nodeId}`, async () => {
      const r = (await cluster.api('GET', `/api/v1/clients/${c.client_id}`)).body;
      return r.status === 'online' && r.node_id === edge.nodeId;
    }, 30_000);
  agent(src, e1, 'source');
  const target1 = agent(tgt, e2, 'target');
  await online(src, e1);
  await online(tgt, e2);

  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const check = async (host: string, port: number, what: string): Promise<void> => {
    const results = await Promise.all(Array.from({ length: CONNECTIONS }, () => transfer(port, SIZE, 180_000, host)));
    const exact = results.filter((r) => r.received === service.results.get(r.id)?.sent && service.results.get(r.id)?.received === r.sent).length;
    t.equal(exact, CONNECTIONS, `${what}: ${CONNECTIONS} concurrent connections x 8 MiB each way, byte-exact (SHA-256 at both ends)`);
  };

  const localPort = await freePort();
  const c2c = await cluster.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  t.equal(c2c.status, 201, 'client-to-client mapping created');
  await eventually('c2c mapping active', async () => (await cluster.api('GET', `/api/v1/mappings/${c2c.body.mapping_id}`)).body.status === 'active', 30_000);
  await check('127.0.0.1', localPort, `client-to-client, source agent on ${e1.nodeId}, target agent on ${e2.nodeId}`);

  const pub = await cluster.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(pub.status, 201, 'public mapping created');
  const publicPort = pub.body.public_port as number;
  for (const e of cluster.edges) await eventually(`public port open on ${e.host}`, () => canConnect(publicPort, e.host), 30_000);
  t.pass('every edge serves the public port on its own address');
  await check(e3.host, publicPort, `public mapping entered through ${e3.nodeId}, which does not hold the target (on ${e2.nodeId})`);

  // Kick-old across edges: the same client logs in on e1; the old session on e2 is closed, the old
  // agent process stops (it was replaced), and tunnels reach the new one.
  const target2 = agent(tgt, e1, 'target-2');
  t.equal(await target1.exited, 1, 'the replaced agent on the other edge stops (exit 1: replaced)');
  t.ok(target1.lines.some((l) => l.includes('TNX_AGENT_REPLACED')), 'it says it was replaced by another login');
  await online(tgt, e1);
  const [after] = await Promise.all([transfer(publicPort, 1024 * 1024, 60_000, e3.host)]);
  t.equal(after!.received, service.results.get(after!.id)?.sent, `after the move, the public mapping through ${e3.nodeId} reaches the target on ${e1.nodeId}`);
  t.equal(target2.child.exitCode, null, 'the new agent keeps running');

  for (const a of agents) await a.stop();
  for (const e of cluster.edges) t.equal(await e.proc.stop(), 0, `${e.nodeId} stops on SIGTERM with exit 0`);
  t.equal(await cluster.apiProc.stop(), 0, 'api stops with exit 0');
  t.equal(await cluster.projector.stop(), 0, 'projector stops with exit 0');
});
