import t, { type Test } from 'tap';
import { join } from 'node:path';
import { liveVisitor, startStreamingService } from '../tunnels/live.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';
import { eventually, freePort, spawnTunnox, startServer, tempDir, type Proc } from './harness.js';

/**
 * Revocation through the Management API ends running tunnels within 1 s (issue 7), with real
 * processes: kick (POST /clients/{id}/disconnect), disable (PATCH /clients/{id} {enabled: false}),
 * mapping delete (DELETE /mappings/{id}) and client delete (DELETE /clients/{id}), each while a
 * transfer is in flight. Standalone (`tunnox server`) and as a cluster of role processes with the
 * source agent on edge 1 and the target agent on edge 2, where the visitor's half and the target's
 * half are held by different edges and both must end. The 1 s is a correctness deadline measured
 * from just before the API request (which itself waits for the projection) until the visitor
 * sees its reset.
 */

const DEADLINE_MS = 1_000;

type Api = <T = any>(method: string, path: string, body?: unknown) => Promise<{ status: number; body: T }>;

interface Client {
  client_id: number;
  auth_code: string;
}

interface Env {
  api: Api;
  /** Control address for the source agent and for the target agent. */
  sourceServer: string;
  targetServer: string;
  /** Node ids the agents must be online on (undefined: any). */
  sourceNode?: string;
  targetNode?: string;
  dir: string;
}

async function revocationScenario(t: Test, env: Env): Promise<void> {
  const { api } = env;
  const procs: Proc[] = [];
  t.teardown(() => Promise.all(procs.map((p) => p.stop())));
  const user = (await api('POST', '/api/v1/users', { username: 'rev', email: 'rev@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const src = await client('source');
  const tgt = await client('target');
  const agent = (c: Client, server: string, name: string): Proc => {
    const p = spawnTunnox(['client', '--server', server, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(env.dir, `${name}.json`)]);
    procs.push(p);
    return p;
  };
  const online = (c: Client, node: string | undefined) =>
    eventually(`client ${c.client_id} online`, async () => {
      const r = (await api('GET', `/api/v1/clients/${c.client_id}`)).body;
      return r.status === 'online' && (node === undefined || r.node_id === node);
    }, 30_000);
  agent(src, env.sourceServer, 'source');
  let targetAgent = agent(tgt, env.targetServer, 'target');
  await online(src, env.sourceNode);
  await online(tgt, env.targetNode);
  const service = await startStreamingService(t);

  const mapping = async (): Promise<{ id: number; localPort: number }> => {
    const localPort = await freePort();
    const m = await api('POST', '/api/v1/mappings', {
      user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
    });
    t.equal(m.status, 201, 'mapping created');
    await eventually('mapping active', async () => (await api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active', 30_000);
    return { id: m.body.mapping_id, localPort };
  };
  /** A transfer that flows, once the source agent listens again (after a reconnect, say). */
  const flowingVisitor = (localPort: number) =>
    eventually('a flowing transfer', async () => {
      const v = liveVisitor(localPort);
      try {
        await v.flowing;
        return v;
      } catch {
        v.close();
        return undefined;
      }
    }, 30_000);

  /** Runs `command` against a flowing transfer and checks that both ends were reset in time. */
  const revokeDuring = async (what: string, localPort: number, command: () => Promise<{ status: number }>): Promise<void> => {
    const visitor = await flowingVisitor(localPort);
    t.teardown(() => visitor.close());
    const serviceSide = service.outcomes[service.outcomes.length - 1]!;
    const before = visitor.received();
    const started = Date.now();
    const res = await command();
    t.ok(res.status >= 200 && res.status < 300, `${what}: the API answered ${res.status}`);
    const end = await visitor.ended;
    const ms = end.at - started;
    t.equal(end.how, 'reset', `${what}: the visitor's transfer is reset, not ended cleanly`);
    t.ok(ms < DEADLINE_MS, `${what}: ended ${ms} ms after the request (deadline ${DEADLINE_MS} ms)`);
    t.ok(end.received > before, `${what}: bytes were flowing until then`);
    t.equal(await serviceSide, 'reset', `${what}: the target service's end is reset too`);
  };

  const m1 = await mapping();
  await revokeDuring('kick source', m1.localPort, () => api('POST', `/api/v1/clients/${src.client_id}/disconnect`));
  // A kick ends the session and its tunnels, not the client: its agent logs in again and tunnels.
  await online(src, env.sourceNode);
  (await flowingVisitor(m1.localPort)).close();
  t.pass('after the kick the source agent is back and tunnels again');

  await revokeDuring('disable target', m1.localPort, () => api('PATCH', `/api/v1/clients/${tgt.client_id}`, { enabled: false }));
  t.equal(await targetAgent.exited, 1, 'the disabled target\'s agent is refused on reconnect and stops');
  t.equal((await api('PATCH', `/api/v1/clients/${tgt.client_id}`, { enabled: true })).status, 200, 'enabled again');
  targetAgent = agent(tgt, env.targetServer, 'target');
  await online(tgt, env.targetNode);

  await revokeDuring('delete mapping', m1.localPort, () => api('DELETE', `/api/v1/mappings/${m1.id}`));

  const m2 = await mapping();
  await revokeDuring('delete source client', m2.localPort, () => api('DELETE', `/api/v1/clients/${src.client_id}`));
}

t.test('standalone server: kick, disable, mapping delete and client delete end running tunnels within 1 s', async (t) => {
  const dir = await tempDir('tnx-revoke-');
  t.teardown(() => dir.remove());
  const server = await startServer(['--data-dir', join(dir.path, 'data')], 'revocation-admin-key-0123456789');
  t.teardown(() => server.proc.stop());
  const address = `127.0.0.1:${server.controlPort}`;
  await revocationScenario(t, { api: server.api, sourceServer: address, targetServer: address, dir: dir.path });
});

t.test('cluster: the same across edges, visitor side on edge 1 and target on edge 2, both ends reset', async (t) => {
  const dir = await tempDir('tnx-revoke-cluster-');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({ edges: ['127.0.0.1', '127.0.0.2'], name: 'tnx_revoke' });
  t.teardown(() => cluster.close());
  const [e1, e2] = cluster.edges as [EdgeHandle, EdgeHandle];
  await revocationScenario(t, {
    api: cluster.api,
    sourceServer: e1.controlAddress,
    targetServer: e2.controlAddress,
    sourceNode: e1.nodeId,
    targetNode: e2.nodeId,
    dir: dir.path,
  });
});
