import { execFile } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { apiClient, eventually, startServer, tempDir, TUNNOX_BIN } from './harness.js';

// `tunnox ctl apikeys` against a running `tunnox server` on its --data-dir: a key made by the CLI
// drives the API at once and is the actor of what it does; list shows it; revoke ends it within a
// second; the server's own admin key is untouched throughout.

t.setTimeout(300_000);
t.comment('timeout=300000');

function ctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TUNNOX_BIN, 'ctl', ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

t.test('ctl apikeys create, list and revoke against a running standalone server', async (t) => {
  const dir = await tempDir('tnx-e2e-apikeys');
  t.teardown(() => dir.remove());
  const dataDir = join(dir.path, 'data');
  const server = await startServer(['--data-dir', dataDir, '--public-port-range', '35200-35210'], 'e2e-admin-key-0123456789');
  t.teardown(() => server.proc.stop());
  const target = ['--data-dir', dataDir];

  const made = await ctl(['apikeys', 'create', '--name', 'billing-sync', '--operator', 'alice@ops', '--json', ...target]);
  t.equal(made.code, 0, made.stderr);
  const key = JSON.parse(made.stdout) as { apikey_id: string; name: string; key: string };
  t.match(key, { name: 'billing-sync', apikey_id: /^[0-9a-f]{16}$/, key: /^tnx_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/ });
  t.match(made.stderr, /shown only now/);

  const api = apiClient(server.apiUrl, key.key);
  const user = await api('POST', '/api/v1/users', { username: 'from-key', email: 'k@example.com' });
  t.equal(user.status, 201, JSON.stringify(user.body));
  const events = await server.api('GET', `/api/v1/events?aggregate=user:${user.body.user_id}`);
  t.same(events.body.events[0].actor, { kind: 'api_key', id: key.apikey_id }, 'the user was created by that key');

  const listed = await eventually('the key is listed', async () => {
    const r = await ctl(['apikeys', 'list', '--json', ...target]);
    const list = JSON.parse(r.stdout) as { keys: { apikey_id: string; status: string; name: string; created_by: string }[] };
    return list.keys.find((k) => k.apikey_id === key.apikey_id);
  });
  t.match(listed, { status: 'active', name: 'billing-sync', created_by: 'operator:alice@ops' });
  const plain = await ctl(['apikeys', 'list', ...target]);
  t.match(plain.stdout, new RegExp(`^${key.apikey_id} {2}active +\\S+ {2}billing-sync$`, 'm'));
  t.notOk(plain.stdout.includes(key.key) || made.stderr.includes(key.key), 'the key itself is printed only once, on stdout of create');

  const bad = await ctl(['apikeys', 'revoke', 'nothex', '--reason', 'x', ...target]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /not an API key id/);
  const missing = await ctl(['apikeys', 'revoke', 'abcdefabcdefabcd', '--reason', 'x', ...target]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no API key abcdefabcdefabcd/);

  const revoked = await ctl(['apikeys', 'revoke', key.apikey_id, '--reason', 'leaked in a log', '--operator', 'alice@ops', ...target]);
  t.equal(revoked.code, 0, revoked.stderr);
  const at = Date.now();
  await eventually('the revoked key is refused', async () => (await api('GET', '/api/v1/users')).status === 401, 5000);
  t.ok(Date.now() - at < 2000, `refused within ${Date.now() - at} ms of the revoke`);
  t.equal((await server.api('GET', '/api/v1/users')).status, 200, 'the admin key still works');
  const all = await eventually('listed as revoked', async () => {
    const r = await ctl(['apikeys', 'list', '--all', '--json', ...target]);
    return (JSON.parse(r.stdout) as { keys: { apikey_id: string; status: string; revoke_reason: string | null }[] }).keys.find(
      (k) => k.apikey_id === key.apikey_id && k.status === 'revoked',
    );
  });
  t.equal(all.revoke_reason, 'leaked in a log');
  const active = JSON.parse((await ctl(['apikeys', 'list', '--json', ...target])).stdout) as { keys: unknown[] };
  t.same(active.keys, [], 'no active key left');
});
