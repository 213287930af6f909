import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Test } from 'tap';
import {
  canConnect,
  eventually,
  freePort,
  spawnTunnox,
  startServer,
  startTransferTarget,
  tempDir,
  transfer,
  type Proc,
  type ServerHandle,
} from './harness.js';

export const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const CONCURRENCY = 20;

/** 20 concurrent visitor connections through `port`, 8 MiB each way, SHA-256 compared at both ends. */
async function pushBytes(t: Test, port: number, target: Awaited<ReturnType<typeof startTransferTarget>>, label: string): Promise<void> {
  const results = await Promise.all(Array.from({ length: CONCURRENCY }, () => transfer(port, SIZE)));
  let ok = 0;
  for (const r of results) {
    const seen = target.results.get(r.id);
    if (seen && seen.received === r.sent && r.received === seen.sent && r.receivedBytes === SIZE && seen.receivedBytes === SIZE + 16) ok++;
  }
  t.equal(ok, CONCURRENCY, `${label}: ${CONCURRENCY} connections byte-exact both ways (${(2 * CONCURRENCY * SIZE) / MiB} MiB total)`);
}

function spawnAgent(server: ServerHandle, args: string[]): Proc {
  return spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--log-level', 'info', ...args]);
}

/**
 * The end-to-end walk: API → events → projector → pushed config → agents → bytes.
 * `serverArgs` selects the mode (standalone: embedded PostgreSQL; JetStream: --nats/--database).
 */
export async function tunnelScenario(t: Test, serverArgs: string[]): Promise<void> {
  const dir = await tempDir('tnx-e2e');
  t.teardown(() => dir.remove());
  // Below Linux's ephemeral range (32768+), so no outgoing connection can be sitting on these ports.
  const rangeStart = 20000 + Math.floor(Math.random() * 12000);
  const server = await startServer(
    ['--data-dir', join(dir.path, 'var', 'lib', 'tunnox'), '--public-port-range', `${rangeStart}-${rangeStart + 50}`, ...serverArgs],
    'e2e-admin-key-0123456789abcdef',
  );
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    await server.proc.stop();
  });

  // Management API: user, two managed clients.
  const user = await server.api('POST', '/api/v1/users', { username: 'alice', email: 'alice@example.com' });
  t.equal(user.status, 201, 'user created');
  t.equal(user.body.user_id, 100000001, 'first user id');
  const unauth = await fetch(server.apiUrl + '/api/v1/users/100000001');
  t.equal(unauth.status, 401, 'no API key → 401');
  const bad = await server.api('POST', '/api/v1/users', { username: 'bob' });
  t.equal(bad.status, 400, 'bad body → 400');
  t.match(JSON.stringify(bad.body), /email/, '400 names the field');

  const a = await server.api('POST', '/api/v1/clients', { user_id: 100000001, client_name: 'laptop' });
  const b = await server.api('POST', '/api/v1/clients', { user_id: 100000001, client_name: 'office' });
  t.equal(a.status, 201);
  t.equal(b.status, 201);
  t.ok(a.body.client_id >= 600000000 && b.body.client_id === a.body.client_id + 1, 'managed ids are sequential from 600000000');
  t.type(a.body.auth_code, 'string', 'auth code returned once');
  const aGet = await server.api('GET', `/api/v1/clients/${a.body.client_id}`);
  t.equal(aGet.body.status, 'offline');
  t.notOk('auth_code' in aGet.body, 'GET never returns the auth code');

  // Wrong auth code: the agent is refused and the client stays offline.
  const intruder = spawnAgent(server, ['--client-id', String(a.body.client_id), '--auth-code', 'tnxc_wrong', '--credentials', join(dir.path, 'x.json')]);
  procs.push(intruder);
  await intruder.waitForLog((e) => /TNX_AUTH_FAILED|auth/i.test(String(e.msg) + String(e.code ?? '') + JSON.stringify(e.err ?? '')), 20_000);
  t.equal(await intruder.exited, 1, 'an agent with a wrong auth code exits 1');
  t.equal((await server.api('GET', `/api/v1/clients/${a.body.client_id}`)).body.status, 'offline', 'wrong auth code does not bring the client online');

  const healthPort = await freePort();
  const agentA = spawnAgent(server, ['--client-id', String(a.body.client_id), '--auth-code', a.body.auth_code, '--credentials', join(dir.path, 'a.json'), '--health', `127.0.0.1:${healthPort}`]);
  const agentB = spawnAgent(server, ['--client-id', String(b.body.client_id), '--auth-code', b.body.auth_code, '--credentials', join(dir.path, 'b.json')]);
  procs.push(agentA, agentB);
  for (const c of [a, b]) {
    const online = await eventually(`client ${c.body.client_id} online`, async () => {
      const r = await server.api('GET', `/api/v1/clients/${c.body.client_id}`);
      return r.body.status === 'online' ? r.body : undefined;
    });
    t.match(online.node_id, /^node-\d{3,4}$/, `client ${c.body.client_id} online on ${online.node_id}`);
  }

  const health = await eventually('agent health endpoint', async () => {
    const r = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
    return r.status === 200 ? ((await r.json()) as { connected: boolean; clientId: number; nodeId: string }) : undefined;
  });
  t.match(health, { connected: true, clientId: a.body.client_id }, 'agent /healthz reports the live session');

  const target = await startTransferTarget(SIZE);
  t.teardown(() => target.close());

  // Client-to-client mapping: agent A listens on localPort, agent B dials the target.
  const localPort = await freePort();
  const m1 = await server.api('POST', '/api/v1/mappings', {
    user_id: 100000001,
    source_client_id: a.body.client_id,
    target_client_id: b.body.client_id,
    protocol: 'tcp',
    target_host: '127.0.0.1',
    target_port: target.port,
    local_port: localPort,
  });
  t.equal(m1.status, 201, 'client-to-client mapping created');
  t.equal(m1.body.mapping_id, 1001, 'first mapping id');
  await eventually('source agent listening', () => canConnect(localPort));
  await eventually('client-to-client mapping active (both agents reported)', async () => (await server.api('GET', '/api/v1/mappings/1001')).body?.status === 'active');
  await pushBytes(t, localPort, target, 'client-to-client');

  // Public mapping: the edge allocates a port from the range and listens on it.
  const m2 = await server.api('POST', '/api/v1/mappings', {
    user_id: 100000001,
    target_client_id: b.body.client_id,
    protocol: 'tcp',
    target_host: '127.0.0.1',
    target_port: target.port,
  });
  t.equal(m2.status, 201, 'public mapping created');
  t.equal(m2.body.mapping_id, 1002);
  const publicPort = Number(m2.body.public_port);
  t.ok(publicPort >= rangeStart && publicPort <= rangeStart + 50, `public port ${publicPort} allocated from the range`);
  await eventually('edge listening on the public port', () => canConnect(publicPort));
  await eventually('public mapping active (target agent reported)', async () => (await server.api('GET', '/api/v1/mappings/1002')).body?.status === 'active');
  await pushBytes(t, publicPort, target, 'public');

  // Deleting mappings stops their listeners.
  t.equal((await server.api('DELETE', '/api/v1/mappings/1001')).status, 204);
  t.equal((await server.api('DELETE', '/api/v1/mappings/1002')).status, 204);
  await eventually('source listener closed', async () => !(await canConnect(localPort)), 5_000);
  await eventually('public listener closed', async () => !(await canConnect(publicPort)), 5_000);
  t.equal((await server.api('GET', '/api/v1/mappings/1001')).status, 404, 'deleted mapping is gone');

  // Anonymous agent: registers, saves credentials, reuses them on restart.
  const credPath = join(dir.path, 'anon', 'credentials.json');
  const anon1 = spawnAgent(server, ['--credentials', credPath]);
  procs.push(anon1);
  const creds = await eventually('anonymous credentials saved', async () => JSON.parse(await readFile(credPath, 'utf8')) as { client_id: number; auth_code: string });
  t.ok(creds.client_id >= 200000000 && creds.client_id <= 299999999, `anonymous id ${creds.client_id} in range`);
  await eventually('anonymous client online', async () => (await server.api('GET', `/api/v1/clients/${creds.client_id}`)).body?.status === 'online');
  t.equal(await anon1.stop(), 0, 'agent exits 0 on SIGTERM');
  await eventually('anonymous client offline after stop', async () => (await server.api('GET', `/api/v1/clients/${creds.client_id}`)).body?.status === 'offline');
  const anon2 = spawnAgent(server, ['--credentials', credPath]);
  procs.push(anon2);
  await eventually('anonymous client back online with the saved id', async () => (await server.api('GET', `/api/v1/clients/${creds.client_id}`)).body?.status === 'online');
  const credsAfter = JSON.parse(await readFile(credPath, 'utf8')) as { client_id: number };
  t.equal(credsAfter.client_id, creds.client_id, 'the same anonymous identity is reused');

  for (const p of procs) await p.stop();
  t.equal(await server.proc.stop(), 0, 'server exits 0 on SIGTERM');
}
