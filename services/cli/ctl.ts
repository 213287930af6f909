import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import type { z } from 'zod';
import type { StoredEvent } from '../../shared/contracts/envelope.js';
import { descriptionText, nameText } from '../../shared/contracts/text.js';
import type { Db } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { TunnoxError, errorMessage } from '../../shared/platform/errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { defaultDataDir } from './config.js';

// `tunnox ctl`: operator commands. Like main.ts, heavy modules (pg, kysely, NATS, the embedded
// database) are imported only by the command that runs.

/** Refusals an operator can act on; the CLI prints the message and exits 1. */
export class CtlError extends TunnoxError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

const Reason = descriptionText(1024).refine((s) => s.trim().length > 0, { message: 'must not be empty' });
const OperatorName = nameText(128);

export interface SkipResult {
  /** The event projections will pass. */
  skipped: { position: number; event_id: string; event_type: string; stream: string };
  /** Position of the EventSkipped appended for it. */
  skip_position: number;
  /** The read-model projection's checkpoint when the skip was recorded. */
  checkpoint: number;
  /** Whether the event failed to project in a trial run (null: not tried, the projection is not at it). */
  fails_to_project: boolean | null;
}

/**
 * Records an operator's audited decision that projections pass the event at `position`: an
 * EventSkipped {position, event_id, event_type, reason} with the operator as actor, appended to
 * stream skip.<position> (once per position). The projector, when that event fails, finds it and
 * moves its checkpoint past the event instead of halting (services/projector/runner.ts).
 *
 * Refused: no event at that position, an event already projected, an EventSkipped itself, a second
 * skip of one position, and, when the projection stands right before the event, an event that
 * projects fine in a trial (rolled back) unless `force`.
 */
export async function skipEvent(opts: {
  store: EventStore;
  db: Db;
  position: number;
  reason: string;
  operator: string;
  force?: boolean;
}): Promise<SkipResult> {
  const { store, db, position } = opts;
  const reason = parseOr('--reason', Reason, opts.reason);
  const operator = parseOr('--operator', OperatorName, opts.operator);
  const [{ skipStreamFor }, { buildEnvelope }, { WrongExpectedRevisionError }, { readCheckpoint }, { READ_MODEL_PROJECTION }] =
    await Promise.all([
      import('../../shared/contracts/events.js'),
      import('../../shared/eventstore/command.js'),
      import('../../shared/eventstore/errors.js'),
      import('../projector/checkpoints.js'),
      import('../projector/readModels.js'),
    ]);

  const [event] = await store.readAll(position - 1, 1);
  if (!event || event.position !== position) throw new CtlError('TNX_CTL_NO_EVENT', `no event at position ${position}`);
  if (event.type === 'EventSkipped') throw new CtlError('TNX_CTL_SKIP_SKIP', `position ${position} is itself an EventSkipped`);
  const checkpoint = await readCheckpoint(db, READ_MODEL_PROJECTION);
  if (checkpoint >= position) {
    throw new CtlError('TNX_CTL_ALREADY_PROJECTED', `the event at position ${position} is already projected (checkpoint ${checkpoint}); nothing to skip`);
  }
  let failsToProject: boolean | null = null;
  if (checkpoint === position - 1) {
    failsToProject = await failsInTrial(db, event);
    if (!failsToProject && !opts.force) {
      throw new CtlError(
        'TNX_CTL_EVENT_PROJECTS',
        `the event at position ${position} (${event.type}) projects fine in a trial run; refusing to skip it (--force to skip anyway)`,
      );
    }
  }

  const skip = buildEnvelope(
    skipStreamFor(position),
    { type: 'EventSkipped', data: { position, event_id: event.id, event_type: event.type, reason } },
    { actor: { kind: 'operator', id: operator } },
  );
  let appended;
  try {
    appended = await store.append(skipStreamFor(position), skip, { expectedRevision: 'no_stream' });
  } catch (err) {
    if (err instanceof WrongExpectedRevisionError) {
      throw new CtlError('TNX_CTL_ALREADY_SKIPPED', `position ${position} already has an EventSkipped (stream ${skipStreamFor(position)})`);
    }
    throw err;
  }
  return {
    skipped: { position, event_id: event.id, event_type: event.type, stream: event.stream },
    skip_position: appended.position,
    checkpoint,
    fails_to_project: failsToProject,
  };
}

/** Applies the event to the read models in a transaction that is always rolled back. */
async function failsInTrial(db: Db, event: StoredEvent): Promise<boolean> {
  const [{ applyEvent, parseForProjection }, { READ_MODEL_PROJECTIONS }, { silentLogger }] = await Promise.all([
    import('../projector/runner.js'),
    import('../projector/readModels.js'),
    import('../../shared/platform/logger.js'),
  ]);
  const rollback = new Error('trial: roll back');
  try {
    await db.transaction().execute(async (tx) => {
      const typed = parseForProjection('ctl-trial', event);
      await applyEvent(tx, READ_MODEL_PROJECTIONS, typed, { logger: silentLogger(), notify: () => undefined });
      throw rollback;
    });
  } catch (err) {
    return err !== rollback;
  }
  return false;
}

function parseOr<T>(flag: string, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `${flag}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

// ---------------------------------------------------------------------------------------------
// Opening the event log and the read-model database the way the server does.

export interface CtlTarget {
  nats?: string;
  database?: string;
  dataDir?: string;
  stream: string;
  subjectPrefix: string;
}

interface Opened {
  store: EventStore;
  db: Db;
  mode: string;
  close(): Promise<void>;
}

/**
 * --nats URL --database URL: cluster (JetStream log, external read models);
 * --database URL: standalone server on an external PostgreSQL (log and read models there);
 * --data-dir DIR (or neither): standalone server with the embedded PostgreSQL of DIR, reused if
 * that server is running, else started for the command and stopped after it.
 */
export async function openTarget(target: CtlTarget, logger: Logger): Promise<Opened> {
  if (target.nats && !target.database) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--nats needs --database (the read models)');
  if (target.database && target.dataDir) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--data-dir and --database exclude each other');
  const closers: Array<() => Promise<unknown>> = [];
  const close = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => logger.warn({ err }, 'closing failed'));
  };
  try {
    let url = target.database;
    let mode = target.nats ? 'cluster' : 'standalone, external PostgreSQL';
    if (!url) {
      const embedded = await embeddedDatabase(target.dataDir ?? defaultDataDir(), logger);
      closers.push(embedded.stop);
      url = embedded.url;
      mode = embedded.reused ? 'standalone, running server' : 'standalone, embedded PostgreSQL started for this command';
    }
    const { createDb, createPool } = await import('../../shared/db/connect.js');
    const pool = createPool(url, 2, (err) => logger.warn({ err }, 'idle PostgreSQL connection failed'));
    const db = createDb(pool);
    closers.push(() => db.destroy());
    let store: EventStore;
    if (target.nats) {
      const [{ connect }, { JetStreamApiCodes, JetStreamApiError, jetstreamManager }, { openJetStreamEventStore }] = await Promise.all([
        import('@nats-io/transport-node'),
        import('@nats-io/jetstream'),
        import('../../shared/eventstore/jetstream.js'),
      ]);
      const nc = await connect({ servers: target.nats, name: 'tunnox-ctl' });
      closers.push(() => nc.close());
      // Opening the store would create a missing stream: a wrong --stream must be an error instead.
      const jsm = await jetstreamManager(nc);
      await jsm.streams.info(target.stream).catch((err: unknown) => {
        if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) {
          throw new CtlError('TNX_CTL_NO_STREAM', `no JetStream stream ${target.stream} at ${target.nats} (see --stream)`);
        }
        throw err;
      });
      store = await openJetStreamEventStore({ nc, streamName: target.stream, subjectPrefix: target.subjectPrefix, logger });
    } else {
      const { PostgresEventStore } = await import('../../shared/eventstore/postgres.js');
      store = new PostgresEventStore({ db, pool, logger });
    }
    closers.push(() => store.close());
    return { store, db, mode, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The server's embedded PostgreSQL: reused while the server (its postmaster) runs, else started. */
async function embeddedDatabase(dataDir: string, logger: Logger): Promise<{ url: string; reused: boolean; stop: () => Promise<void> }> {
  const pgDir = join(dataDir, 'postgres');
  const passwordFile = join(dataDir, 'postgres.password');
  if (!existsSync(join(pgDir, 'PG_VERSION')) || !existsSync(passwordFile)) {
    throw new CtlError('TNX_CTL_NO_DATA_DIR', `${dataDir} holds no embedded PostgreSQL (is it the server's --data-dir?)`);
  }
  const { EMBEDDED_DATABASE, EMBEDDED_USER, startEmbeddedPostgres } = await import('./embedded-postgres.js');
  const running = await runningPostmasterPort(pgDir);
  if (running !== null) {
    const password = (await readFile(passwordFile, 'utf8')).trim();
    const url = `postgres://${EMBEDDED_USER}:${encodeURIComponent(password)}@127.0.0.1:${running}/${EMBEDDED_DATABASE}`;
    return { url, reused: true, stop: async () => undefined };
  }
  const embedded = await startEmbeddedPostgres(dataDir, logger);
  return { url: embedded.url, reused: false, stop: () => embedded.stop() };
}

/**
 * The port of the PostgreSQL running on `pgDir`, or null. postmaster.pid holds the pid on line 1
 * and the port on line 4. Starting a second one would stop this one (startEmbeddedPostgres treats
 * a live postmaster as an orphan), so a running server's database is always reused instead.
 */
async function runningPostmasterPort(pgDir: string): Promise<number | null> {
  const pidFile = join(pgDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return null;
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 1) return null;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return null;
  }
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.includes('postgres')) return null;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CtlError('TNX_CTL_PG_STARTING', `the embedded PostgreSQL (pid ${pid}) is running but has no port yet; retry`);
  }
  return port;
}

// ---------------------------------------------------------------------------------------------

function positionArg(value: string): number {
  if (!/^[1-9][0-9]{0,15}$/.test(value)) throw new InvalidArgumentError('must be a positive decimal position');
  return Number(value);
}

function defaultOperator(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `unknown@${hostname()}`;
  }
}

/** The `ctl` command tree, registered by main.ts. */
export function ctlCommand(): Command {
  const ctl = new Command('ctl').description('operator commands (event log, projections)');
  const events = ctl.command('events').description('the event log');
  events
    .command('skip')
    .description(
      'let projections pass one event that can never be projected: records an audited EventSkipped ' +
        '(reason, operator) in the log; restart the projector afterwards (docs/events.md)',
    )
    .argument('<position>', 'position of the event (the projector names it when it halts)', positionArg)
    .requiredOption('--reason <text>', 'why the event is skipped (recorded in the log)')
    .option('--nats <url>', 'cluster: NATS JetStream URL of the event log (with --database)')
    .option('--database <url>', 'PostgreSQL URL of the read models (cluster), or of a standalone server started with --database')
    .option('--data-dir <dir>', "standalone: the server's data dir (its embedded PostgreSQL is reused if running, else started)")
    .option('--stream <name>', 'JetStream stream for domain events', 'TUNNOX_EVENTS')
    .option('--subject-prefix <prefix>', 'NATS subject prefix', 'tunnox')
    .option('--operator <name>', 'who decides, recorded as the actor', defaultOperator())
    .option('--force', 'skip even an event that projects fine in a trial run')
    .action(async (position: number, o: CtlTarget & { reason: string; operator: string; force?: boolean }) => {
      const { createLogger } = await import('../../shared/platform/logger.js');
      // Logs go to stderr: stdout carries the result (one JSON line).
      const logger = createLogger({ level: 'warn', name: 'tunnox-ctl' }, process.stderr);
      let opened: Opened | undefined;
      try {
        opened = await openTarget(o, logger);
        const result = await skipEvent({ store: opened.store, db: opened.db, position, reason: o.reason, operator: o.operator, force: o.force === true });
        process.stdout.write(JSON.stringify(result) + '\n');
        process.stderr.write(
          `tunnox: recorded EventSkipped at position ${result.skip_position} for ${result.skipped.event_type} at position ${position} (${opened.mode}); ` +
            'restart the projector (or the server) to pass it\n',
        );
      } catch (err) {
        process.stderr.write(`tunnox: ${errorMessage(err)}\n`);
        process.exitCode = 1;
      } finally {
        await opened?.close();
      }
    });
  return ctl;
}
