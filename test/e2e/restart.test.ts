import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { canConnect, eventually, freePort, spawnTunnox, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';

// A standalone server restarted on the same data dir keeps everything: events, read models, the
// generated admin key; running agents reconnect on their own and get their config back.
t.test('standalone restart: state survives, agents reconnect and resync', async (t) => {
  const dir = await tempDir('tnx-e2e-restart');
  t.teardown(() => dir.remove());
  const dataDir = join(dir.path, 'server');
  const controlPort = await freePort();
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs.reverse()) await p.stop();
  });

  const start = async (): Promise<{ proc: Proc; apiUrl: string }> => {
    const proc = spawnTunnox(['server', '--data-dir', dataDir, '--ws-port', '0', '--api-port', '0', '--control-host', '127.0.0.1', '--control-port', String(controlPort)]);
    procs.push(proc);
    const ready = await proc.waitForLog((e) => e.msg === 'tunnox server ready', 60_000);
    return { proc, apiUrl: String(ready.apiUrl) };
  };
  const api = async (apiUrl: string, key: string, method: string, path: string, body?: unknown) => {
    const res = await fetch(apiUrl + path, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };

  const first = await start();
  const key = (await readFile(join(dataDir, 'admin-api-key'), 'utf8')).trim();
  t.match(key, /^tnxk_/, 'an admin key was generated into the data dir');
  t.match(first.proc.lines.join('\n'), key, 'and printed at start');

  const user = await api(first.apiUrl, key, 'POST', '/api/v1/users', { username: 'carol', email: 'carol@example.com' });
  const a = await api(first.apiUrl, key, 'POST', '/api/v1/clients', { user_id: user.body.user_id, client_name: 'a' });
  const b = await api(first.apiUrl, key, 'POST', '/api/v1/clients', { user_id: user.body.user_id, client_name: 'b' });
  for (const [name, c] of [['a', a], ['b', b]] as const) {
    procs.push(spawnTunnox(['client', '--server', `127.0.0.1:${controlPort}`, '--client-id', String(c.body.client_id), '--auth-code', c.body.auth_code, '--credentials', join(dir.path, `${name}.json`)]));
  }
  for (const c of [a, b]) {
    await eventually(`client ${c.body.client_id} online`, async () => (await api(first.apiUrl, key, 'GET', `/api/v1/clients/${c.body.client_id}`)).body.status === 'online');
  }
  const target = await startTransferTarget(256 * 1024);
  t.teardown(() => target.close());
  const localPort = await freePort();
  const m = await api(first.apiUrl, key, 'POST', '/api/v1/mappings', {
    user_id: user.body.user_id, source_client_id: a.body.client_id, target_client_id: b.body.client_id,
    protocol: 'tcp', target_host: '127.0.0.1', target_port: target.port, local_port: localPort,
  });
  t.equal(m.status, 201);
  await eventually('mapping active', () => canConnect(localPort));
  const before = await transfer(localPort, 256 * 1024);
  t.equal(target.results.get(before.id)?.received, before.sent, 'bytes flow before the restart');

  t.equal(await first.proc.stop(), 0, 'server stops cleanly');
  const second = await start();
  t.equal((await api(second.apiUrl, key, 'GET', `/api/v1/users/${user.body.user_id}`)).status, 200, 'the same admin key and the user survive');
  t.equal((await api(second.apiUrl, key, 'GET', `/api/v1/mappings/${m.body.mapping_id}`)).status, 200, 'the mapping survives');
  const next = await api(second.apiUrl, key, 'POST', '/api/v1/users', { username: 'dave', email: 'dave@example.com' });
  t.equal(next.body.user_id, user.body.user_id + 1, 'ids continue after the restart');

  for (const c of [a, b]) {
    await eventually(`client ${c.body.client_id} back online`, async () => (await api(second.apiUrl, key, 'GET', `/api/v1/clients/${c.body.client_id}`)).body.status === 'online', 30_000);
  }
  const after = await eventually('tunnel works again', async () => {
    const r = await transfer(localPort, 256 * 1024, 10_000).catch(() => undefined);
    return r && target.results.get(r.id)?.received === r.sent && r.receivedBytes === 256 * 1024 ? r : undefined;
  }, 30_000);
  t.ok(after, 'bytes flow after the restart without restarting the agents');
});

// kill -9: nothing is said on the way down. The next start must clean up after it: the orphaned
// embedded PostgreSQL is stopped and restarted, and sessions of the dead run are closed.
t.test('standalone crash: restart recovers the database and presence', async (t) => {
  const dir = await tempDir('tnx-e2e-crash');
  t.teardown(() => dir.remove());
  const dataDir = join(dir.path, 'server');
  const controlPort = await freePort();
  const key = 'crash-test-admin-key-0123456789';
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs.reverse()) await p.stop();
  });
  const start = async (): Promise<{ proc: Proc; apiUrl: string }> => {
    const proc = spawnTunnox(['server', '--data-dir', dataDir, '--ws-port', '0', '--api-port', '0', '--api-key', key, '--control-host', '127.0.0.1', '--control-port', String(controlPort)]);
    procs.push(proc);
    const ready = await proc.waitForLog((e) => e.msg === 'tunnox server ready', 60_000);
    return { proc, apiUrl: String(ready.apiUrl) };
  };
  const get = async (apiUrl: string, path: string) => (await fetch(apiUrl + path, { headers: { authorization: `Bearer ${key}` } })).json() as Promise<any>;
  const post = async (apiUrl: string, path: string, body: unknown) =>
    (await fetch(apiUrl + path, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<any>;

  const first = await start();
  const user = await post(first.apiUrl, '/api/v1/users', { username: 'erin', email: 'erin@example.com' });
  const c = await post(first.apiUrl, '/api/v1/clients', { user_id: user.user_id, client_name: 'gone' });
  const agent = spawnTunnox(['client', '--server', `127.0.0.1:${controlPort}`, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, 'c.json')]);
  procs.push(agent);
  await eventually('agent online', async () => (await get(first.apiUrl, `/api/v1/clients/${c.client_id}`)).status === 'online');

  first.proc.child.kill('SIGKILL');
  await first.proc.exited;
  await agent.stop(); // the agent goes away while the edge is down: nobody records its disconnect

  const second = await start();
  t.match(second.proc.lines.join('\n'), /left running by a previous run/, 'the orphaned PostgreSQL was stopped and restarted');
  const after = await get(second.apiUrl, `/api/v1/clients/${c.client_id}`);
  t.equal(after.status, 'offline', 'the dead session is closed at start-up');
  t.equal(after.node_id, null);
  t.equal((await get(second.apiUrl, `/api/v1/users/${user.user_id}`)).username, 'erin', 'acknowledged writes survived kill -9');
  t.equal(await second.proc.stop(), 0);
});
