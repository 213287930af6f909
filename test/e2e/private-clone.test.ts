import { existsSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { ROOT, spawnTunnox, tempDir } from './harness.js';
import { freePort } from '../../shared/net/listen.js';

// A clone under a folder only its owner can enter (root's home is 0700; so is any mkdtemp dir).
// As root, PostgreSQL runs as an unprivileged system user that cannot reach the binaries npm put
// in that clone's node_modules: the server must still come up, without loosening the folder.

const asRoot = process.getuid?.() === 0;

/** The packages the server needs at run time: the production dependency closure of package.json. */
function runtimePackages(): string[] {
  const top = join(ROOT, 'node_modules');
  const found = new Set<string>();
  const queue = [ROOT];
  while (queue.length > 0) {
    const dir = queue.shift()!;
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      // Node's lookup: the nearest node_modules/<name> from the requiring package up to the root.
      let at: string | undefined;
      for (let d = dir; d.startsWith(ROOT); d = dirname(d)) {
        if (existsSync(join(d, 'node_modules', name, 'package.json'))) {
          at = join(d, 'node_modules', name);
          break;
        }
        if (d === ROOT) break;
      }
      if (!at) continue; // an optional dependency for another platform
      if (at === join(top, name)) {
        if (found.has(name)) continue;
        found.add(name);
      }
      queue.push(at); // nested copies travel with their parent's folder; their deps may be hoisted
    }
  }
  return [...found];
}

/** Copies the built tree (bin, dist, package.json, run-time node_modules) into `dest`, with no link back. */
async function copyBuiltTree(dest: string): Promise<void> {
  for (const entry of ['bin', 'dist', 'package.json']) await cp(join(ROOT, entry), join(dest, entry), { recursive: true });
  await mkdir(join(dest, 'node_modules'));
  for (const name of runtimePackages()) {
    // verbatimSymlinks: links inside packages (the PostgreSQL lib/*.so ones) stay relative, inside the copy.
    await cp(join(ROOT, 'node_modules', name), join(dest, 'node_modules', name), { recursive: true, verbatimSymlinks: true });
  }
}

async function passwordFilesInTmp(): Promise<Set<string>> {
  return new Set((await readdir(tmpdir())).filter((n) => n.startsWith('pg-password-')));
}

t.test('a server runs from a copy of the built tree under a 0700 folder, and prints the admin key once', async (t) => {
  const priv = await mkdtemp(join(tmpdir(), 'tnx-e2e-private-'));
  t.teardown(() => rm(priv, { recursive: true, force: true }));
  await chmod(priv, 0o700);
  const clone = join(priv, 'tunnox');
  await copyBuiltTree(clone);
  t.equal((await stat(priv)).mode & 0o777, 0o700, 'the clone sits under a 0700 folder');

  // As root the data dir must be reachable by the database user (as /var/lib/tunnox/server is);
  // the binaries are not, they stay in the private clone.
  const outside = await tempDir('tnx-e2e-private-data');
  t.teardown(() => outside.remove());
  const dataDir = asRoot ? join(outside.path, 'server') : join(priv, 'data');
  const passwordFilesBefore = await passwordFilesInTmp();

  const start = async () => {
    const proc = spawnTunnox(['server', '--data-dir', dataDir, '--ws-port', '0', '--api-port', '0', '--control-port', '0', '--control-host', '127.0.0.1', '--public-host', '127.0.0.1'], {}, clone);
    t.teardown(() => proc.stop());
    const ready = await proc.waitForLog((e) => e.msg === 'tunnox server ready', 90_000);
    return { proc, apiUrl: String(ready.apiUrl) };
  };

  const first = await start();
  t.equal((await fetch(`${first.apiUrl}/healthz`)).status, 200, 'the server is healthy');
  const keyFile = join(dataDir, 'admin-api-key');
  const key = (await readFile(keyFile, 'utf8')).trim();
  const banner = () => first.proc.lines.join('\n');
  t.match(banner(), key, 'the generated key is printed on its first start');
  t.match(banner(), `$(cat ${keyFile})`, 'the example command reads the key from its file');
  const created = await fetch(`${first.apiUrl}/api/v1/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'priv', email: 'priv@example.com' }),
  });
  t.equal(created.status, 201, 'the API works with it');
  const userId = ((await created.json()) as { user_id: number }).user_id;
  const leaked = [...(await passwordFilesInTmp())].filter((n) => !passwordFilesBefore.has(n));
  t.same(leaked, [], 'no database password file was written to the shared temp dir');
  t.same((await readdir(dataDir)).filter((n) => n.startsWith('.')), [], 'no scratch folder is left in the data dir');
  if (asRoot) {
    const staged = (await readdir(dataDir)).filter((n) => n.startsWith('pgbin-'));
    t.equal(staged.length, 1, 'as root, the binaries were staged once into the data dir');
    const st = await stat(join(dataDir, staged[0]!));
    t.equal(st.uid, 0, 'root-owned');
    t.equal(st.mode & 0o777, 0o755, 'world-readable, writable only by root');
  }
  t.equal((await stat(priv)).mode & 0o777, 0o700, 'the private folder was not loosened');
  t.equal(await first.proc.stop(), 0, 'SIGTERM stops the server cleanly');
  t.notOk(existsSync(join(dataDir, 'postgres', 'postmaster.pid')), 'and its PostgreSQL with it');

  const second = await start();
  const again = second.proc.lines.join('\n');
  t.notMatch(again, key, 'a later start does not print the key');
  t.match(again, `kept in ${keyFile}`, 'it says where the key is kept');
  const user = await fetch(`${second.apiUrl}/api/v1/users/${userId}`, { headers: { authorization: `Bearer ${key}` } });
  t.equal(user.status, 200, 'the kept key still works, and the user survived the restart');
  t.equal(await second.proc.stop(), 0);
});

t.test('as root, a data dir the database user cannot reach fails with one line that says what to do', { skip: !asRoot && 'needs root' }, async (t) => {
  const priv = await mkdtemp(join(tmpdir(), 'tnx-e2e-private-'));
  t.teardown(() => rm(priv, { recursive: true, force: true }));
  const proc = spawnTunnox(['server', '--data-dir', join(priv, 'data'), '--ws-port', '0', '--api-port', '0', '--control-port', '0', '--control-host', '127.0.0.1']);
  t.teardown(() => proc.stop());
  t.equal(await proc.exited, 1, 'the server exits with 1');
  const human = proc.lines.filter((l) => l.startsWith('tunnox: '));
  t.equal(human.length, 1, 'one line for the person');
  t.match(human[0], `cannot enter ${priv}`, 'naming the folder in the way');
  t.match(human[0], /use a --data-dir/, 'and what to do');
  t.notOk(proc.lines.some((l) => /^\s+at /.test(l)), 'no stack trace is printed');
  t.equal((await stat(priv)).mode & 0o777, 0o700, 'the folder was not loosened');
});

t.test('a port in use fails start-up with one line that says what to do', async (t) => {
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => busy.close(() => r())));
  const port = (busy.address() as AddressInfo).port;
  const dir = await tempDir('tnx-e2e-busy');
  t.teardown(() => dir.remove());
  const proc = spawnTunnox(['server', '--data-dir', join(dir.path, 'server'), '--ws-port', '0', '--api-host', '127.0.0.1', '--api-port', String(port), '--control-port', '0', '--control-host', '127.0.0.1']);
  t.teardown(() => proc.stop());
  t.equal(await proc.exited, 1, 'the server exits with 1');
  const human = proc.lines.filter((l) => l.startsWith('tunnox: '));
  t.equal(human.length, 1, 'one line for the person');
  t.match(human[0], `EADDRINUSE`, 'saying what failed');
  t.match(human[0], /choose another port \(--api-port/, 'and what to do');
  t.notOk(existsSync(join(dir.path, 'server', 'postgres', 'postmaster.pid')), 'the embedded PostgreSQL was stopped on the way out');
});

t.test('an unreachable NATS or PostgreSQL fails start-up with one line naming it and the flag to fix', async (t) => {
  const closed = await freePort(); // bound and released: nothing listens there
  const cases: [string, string[], RegExp][] = [
    ['NATS', ['--nats', `nats://127.0.0.1:${closed}`, '--database', 'postgres://postgres@127.0.0.1:5432/postgres'], /cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+.*fix --nats/],
    ['PostgreSQL', ['--database', `postgres://postgres:hunter2@127.0.0.1:${closed}/tunnox`], /cannot prepare the PostgreSQL database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/tunnox.*--database/],
  ];
  for (const [what, flags, expected] of cases) {
    const dir = await tempDir('tnx-e2e-unreachable');
    t.teardown(() => dir.remove());
    const proc = spawnTunnox(['server', '--data-dir', join(dir.path, 'server'), '--ws-port', '0', '--api-port', '0', '--control-port', '0', '--control-host', '127.0.0.1', ...flags]);
    t.teardown(() => proc.stop());
    t.equal(await proc.exited, 1, `${what}: exits with 1`);
    const human = proc.lines.filter((l) => l.startsWith('tunnox: '));
    t.equal(human.length, 1, `${what}: one line for the person`);
    t.match(human[0], expected, `${what}: names the service, its address and the flag`);
    t.notOk(proc.lines.join('\n').includes('hunter2'), `${what}: no password is printed`);
  }
});

t.test('a built tree without its node_modules says to run make setup, in one line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-e2e-nomodules-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const entry of ['bin', 'dist', 'package.json']) await cp(join(ROOT, entry), join(dir, entry), { recursive: true });
  const proc = spawnTunnox(['server', '--data-dir', join(dir, 'data')], {}, dir);
  t.equal(await proc.exited, 1, 'exits with 1');
  t.same(proc.lines.filter((l) => l.trim()), [proc.lines.find((l) => l.startsWith('tunnox: '))], 'its only output is one tunnox: line');
  t.match(proc.lines.join('\n'), /Cannot find package .*; run `make setup`/, 'naming what is missing and what to do');
});
