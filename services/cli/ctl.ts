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
import { errorMessage } from '../../shared/platform/errors.js';
import { CtlError } from './ctl-errors.js';
import type { Logger } from '../../shared/platform/logger.js';
import { defaultDataDir } from './config.js';

// `tunnox ctl`: operator commands. Like main.ts, heavy modules (pg, kysely, NATS, the embedded
// database) are imported only by the command that runs.

export { CtlError } from './ctl-errors.js';

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

export interface Opened {
  store: EventStore;
  /** The read models; null when the command needs only the log and none was given (--nats alone). */
  db: Db | null;
  mode: string;
  /** Cluster mode: the NATS connection the log is read through. */
  nats: { nc: import('@nats-io/nats-core').NatsConnection; streamName: string; subjectPrefix: string } | null;
  close(): Promise<void>;
}

/**
 * --nats URL --database URL: cluster (JetStream log, external read models; --nats alone for the
 * commands that read only the log);
 * --database URL: standalone server on an external PostgreSQL (log and read models there);
 * --data-dir DIR (or neither): standalone server with the embedded PostgreSQL of DIR, reused if
 * that server is running, else started for the command and stopped after it.
 */
export async function openTarget(target: CtlTarget, logger: Logger, opts: { readModels: boolean } = { readModels: true }): Promise<Opened> {
  if (target.nats && !target.database && opts.readModels) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--nats needs --database (the read models)');
  if (target.database && target.dataDir) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--data-dir and --database exclude each other');
  if (target.nats && target.dataDir) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--data-dir is a standalone server\'s; with --nats give --database');
  const closers: Array<() => Promise<unknown>> = [];
  const close = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => logger.warn({ err }, 'closing failed'));
  };
  try {
    let url = target.database;
    let mode = target.nats ? 'cluster' : 'standalone, external PostgreSQL';
    if (!url && !target.nats) {
      const embedded = await embeddedDatabase(target.dataDir ?? defaultDataDir(), logger);
      closers.push(embedded.stop);
      url = embedded.url;
      mode = embedded.reused ? 'standalone, running server' : 'standalone, embedded PostgreSQL started for this command';
    }
    let db: Db | null = null;
    let pool: import('pg').Pool | null = null;
    if (url) {
      const { createDb, createPool } = await import('../../shared/db/connect.js');
      const p = createPool(url, 2, (err) => logger.warn({ err }, 'idle PostgreSQL connection failed'));
      const d = createDb(p);
      closers.push(() => d.destroy());
      db = d;
      pool = p;
    }
    let store: EventStore;
    let nats: Opened['nats'] = null;
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
      nats = { nc, streamName: target.stream, subjectPrefix: target.subjectPrefix };
    } else {
      const { PostgresEventStore } = await import('../../shared/eventstore/postgres.js');
      if (!db || !pool) throw new Error('standalone without a database');
      store = new PostgresEventStore({ db, pool, logger });
    }
    closers.push(() => store.close());
    return { store, db, mode, nats, close };
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

function countArg(max: number) {
  return (value: string): number => {
    if (!/^(0|[1-9][0-9]{0,6})$/.test(value) || Number(value) > max) throw new InvalidArgumentError(`must be a whole number from 0 to ${max}`);
    return Number(value);
  };
}

function afterArg(value: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(value)) throw new InvalidArgumentError('must be a log position (0 for the start)');
  return Number(value);
}

function portArg(value: string): number {
  if (!/^[1-9][0-9]{0,4}$/.test(value) || Number(value) > 65535) throw new InvalidArgumentError('must be a TCP port, 1-65535');
  return Number(value);
}

function idArg(value: string): number {
  if (!/^[1-9][0-9]{0,15}$/.test(value)) throw new InvalidArgumentError('must be a decimal id');
  return Number(value);
}

function defaultOperator(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `unknown@${hostname()}`;
  }
}

/** The flags that say which event log (and read models) a command works on. */
function withTarget(cmd: Command): Command {
  return cmd
    .option('--nats <url>', 'cluster: NATS JetStream URL of the event log (with --database for the read models)')
    .option('--database <url>', 'PostgreSQL URL of the read models (cluster), or of a standalone server started with --database')
    .option('--data-dir <dir>', "standalone: the server's data dir (its embedded PostgreSQL is reused if running, else started)")
    .option('--stream <name>', 'JetStream stream for domain events', 'TUNNOX_EVENTS')
    .option('--subject-prefix <prefix>', 'NATS subject prefix', 'tunnox');
}

/**
 * Opens the target, runs `body`, closes; a refusal or failure is printed on stderr with exit code
 * `failCode` (1). Logs go to stderr: stdout carries the result. SIGINT/SIGTERM abort `signal`.
 */
async function runCtl(
  target: CtlTarget,
  opts: { readModels: boolean; failCode?: number },
  body: (opened: Opened, signal: AbortSignal, logger: Logger) => Promise<number | void>,
): Promise<void> {
  const { createLogger } = await import('../../shared/platform/logger.js');
  const logger = createLogger({ level: 'warn', name: 'tunnox-ctl' }, process.stderr);
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let opened: Opened | undefined;
  try {
    opened = await openTarget(target, logger, { readModels: opts.readModels });
    const code = await body(opened, abort.signal, logger);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    process.stderr.write(`tunnox: ${errorMessage(err)}\n`);
    process.exitCode = opts.failCode ?? 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await opened?.close();
  }
}

function needDb(opened: Opened): Db {
  if (!opened.db) throw new CtlError('TNX_CTL_BAD_ARGUMENT', 'this command needs the read models: give --database');
  return opened.db;
}

function parseTypes(value: string | undefined): ReadonlySet<string> | undefined {
  if (value === undefined) return undefined;
  return new Set(value.split(','));
}

/** The `ctl` command tree, registered by main.ts. */
export function ctlCommand(): Command {
  const ctl = new Command('ctl').description(
    'operator commands on the event log and the read models, directly (no API): --nats URL --database URL for a cluster, ' +
      '--data-dir DIR (or --database URL) for a standalone server, running or stopped',
  );
  const events = ctl.command('events').description('the event log');
  withTarget(
    events
      .command('skip')
      .description(
        'let projections pass one event that can never be projected: records an audited EventSkipped ' +
          '(reason, operator) in the log; restart the projector afterwards (docs/events.md)',
      )
      .argument('<position>', 'position of the event (the projector names it when it halts)', positionArg)
      .requiredOption('--reason <text>', 'why the event is skipped (recorded in the log)')
      .option('--operator <name>', 'who decides, recorded as the actor', defaultOperator())
      .option('--force', 'skip even an event that projects fine in a trial run'),
  ).action(async (position: number, o: CtlTarget & { reason: string; operator: string; force?: boolean }) => {
    await runCtl(o, { readModels: true }, async (opened) => {
      const result = await skipEvent({ store: opened.store, db: needDb(opened), position, reason: o.reason, operator: o.operator, force: o.force === true });
      process.stdout.write(JSON.stringify(result) + '\n');
      process.stderr.write(
        `tunnox: recorded EventSkipped at position ${result.skip_position} for ${result.skipped.event_type} at position ${position} (${opened.mode}); ` +
          'restart the projector (or the server) to pass it\n',
      );
    });
  });

  withTarget(
    events
      .command('tail')
      .description(
        'print the last events of the log (or of one aggregate), one readable line each: position, time, stream@version, type, actor, ' +
          'payload (secret-like fields redacted); --follow keeps printing new ones until interrupted',
      )
      .option('--aggregate <ref>', "one aggregate's events: <aggregate>:<id>, e.g. mapping:1001, client:600000001")
      .option('--type <types>', 'only these event types, comma-separated')
      .option('-n, --lines <n>', 'how many of the last events', countArg(100_000), 20)
      .option('--after <position>', 'every event after this position instead of the last --lines', afterArg)
      .option('-f, --follow', 'keep printing new events (Ctrl-C to stop)')
      .option('--json', 'one JSON object per event, as GET /api/v1/events shows it'),
  ).action(async (o: CtlTarget & { aggregate?: string; type?: string; lines: number; after?: number; follow?: boolean; json?: boolean }) => {
    await runCtl(o, { readModels: false }, async (opened, signal) => {
      const [{ parseAggregateRef }, { isEventType }, { tailEvents }] = await Promise.all([
        import('../../shared/contracts/audit.js'),
        import('../../shared/contracts/events.js'),
        import('./ctl-events.js'),
      ]);
      let stream: string | undefined;
      if (o.aggregate !== undefined) {
        const ref = parseAggregateRef(o.aggregate);
        if ('problem' in ref) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `--aggregate ${o.aggregate}: ${ref.problem}`);
        stream = ref.stream;
      }
      const types = parseTypes(o.type);
      const unknown = [...(types ?? [])].filter((t) => !isEventType(t));
      if (unknown.length > 0) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `--type: unknown event type ${JSON.stringify(unknown[0])}`);
      await tailEvents(opened.store, {
        ...(stream !== undefined ? { stream } : {}),
        ...(types ? { types } : {}),
        ...(o.after !== undefined ? { after: o.after } : {}),
        lines: o.lines,
        follow: o.follow === true,
        signal,
        json: o.json === true,
        write: (line) => process.stdout.write(line + '\n'),
      });
    });
  });

  withTarget(
    events
      .command('copy')
      .description(
        'cluster: copy the JetStream event log to a new stream on a new subject prefix, every mapping secret an earlier release ' +
          'stored (MappingCreated v1) removed, positions and versions kept; with every tunnox process stopped, then restart them on ' +
          'the copy (docs/operations.md). Resumes an interrupted copy. A standalone (PostgreSQL) log is rewritten by the server at start instead',
      )
      .requiredOption('--to-stream <name>', 'the new stream')
      .requiredOption('--to-subject-prefix <prefix>', 'its subject prefix (must differ from --subject-prefix)')
      .option('--replicas <n>', "replicas of the new stream (default: the source's)", countArg(5))
      .option('--delete-source', 'after a complete copy, delete the source stream and its state stream (<stream>_CFG)'),
  ).action(async (o: CtlTarget & { toStream: string; toSubjectPrefix: string; replicas?: number; deleteSource?: boolean }) => {
    await runCtl(o, { readModels: false }, async (opened, signal, logger) => {
      if (!opened.nats) {
        throw new CtlError('TNX_CTL_BAD_ARGUMENT', 'events copy works on a JetStream log (--nats); a standalone server rewrites its PostgreSQL log itself when it starts (migration 0006)');
      }
      if (!/^[A-Za-z0-9_-]+$/.test(o.toStream)) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--to-stream: letters, digits, _ and - only');
      if (!/^[a-z0-9_-]+$/.test(o.toSubjectPrefix)) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--to-subject-prefix: lower-case letters, digits, _ and - only');
      const { copyEventStream } = await import('./ctl-copy.js');
      const report = await copyEventStream({
        nc: opened.nats.nc,
        from: { stream: opened.nats.streamName, subjectPrefix: opened.nats.subjectPrefix },
        to: { stream: o.toStream, subjectPrefix: o.toSubjectPrefix },
        ...(o.replicas !== undefined && o.replicas > 0 ? { replicas: o.replicas } : {}),
        deleteSource: o.deleteSource === true,
        logger,
        signal,
      });
      process.stdout.write(JSON.stringify(report) + '\n');
      process.stderr.write(
        `tunnox: copied ${report.copied} events (${report.rewritten} rewritten without their mapping secret) from ${report.from} to ${report.to}, ` +
          `positions 1-${report.last_position} kept; start every process with --stream ${report.to} --subject-prefix ${o.toSubjectPrefix}` +
          (report.deleted_source.length > 0 ? `; deleted ${report.deleted_source.join(', ')}\n` : `; then delete ${report.from} and ${report.from}_CFG (nats stream rm), which still hold the secrets\n`),
      );
    });
  });

  withTarget(
    ctl
      .command('state')
      .description(
        "print an aggregate's state as of a point in the log, folded from its events with the domain's own evolve " +
          '(JSON; secret-like fields redacted)',
      )
      .argument('<aggregate>', 'mapping, user, client, client-session, port, localport, sequence, account (quota and slots) or username')
      .argument('<id>', 'its id (localport: <client>_<port>; sequence: its name)')
      .option('--at <seq|time>', 'a log position (the state after that event) or a time (RFC 3339, e.g. 2026-05-01T12:00:00Z); default: now'),
  ).action(async (kind: string, id: string, o: CtlTarget & { at?: string }) => {
    await runCtl(o, { readModels: false }, async (opened) => {
      const { parsePoint, stateAt } = await import('./ctl-state.js');
      const result = await stateAt(opened.store, kind, id, o.at === undefined ? undefined : parsePoint(o.at));
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    });
  });

  const projections = ctl.command('projections').description('the read models the projector folds from the log');
  withTarget(
    projections
      .command('rebuild')
      .description(
        'replay every event from the start into shadow tables and compare them row by row with the live read models ' +
          '(--verify: print the differences; exit 0 identical, 1 different, 2 could not verify), or also replace the differing live rows ' +
          'in one transaction that keeps the projector checkpoint consistent (--swap; exit 0 once swapped). Safe next to a running projector (docs/events.md)',
      )
      .option('--verify', 'compare only')
      .option('--swap', 'compare, then make the live tables equal to the rebuilt ones')
      .option('--max-diffs <n>', 'list at most this many differing rows', countArg(1_000_000), 100)
      .option('--json', 'print the report as one JSON object'),
  ).action(async (o: CtlTarget & { verify?: boolean; swap?: boolean; maxDiffs: number; json?: boolean }) => {
    await runCtl(o, { readModels: true, failCode: 2 }, async (opened, _signal, logger) => {
      if (!o.verify && !o.swap) throw new CtlError('TNX_CTL_BAD_ARGUMENT', 'say --verify (compare only) or --swap (compare and replace)');
      const { ctlRebuild, formatReport } = await import('./ctl-rebuild.js');
      const report = await ctlRebuild({
        store: opened.store,
        db: needDb(opened),
        logger,
        swap: o.swap === true,
        maxDifferences: o.maxDiffs,
        ...(opened.nats ? { cluster: opened.nats } : {}),
      });
      process.stdout.write(o.json ? JSON.stringify(report) + '\n' : formatReport(report).join('\n') + '\n');
      return report.identical || report.swapped ? 0 : 1;
    });
  });

  const ports = ctl.command('ports').description('public and local port reservations');
  withTarget(
    ports
      .command('release')
      .description(
        'free a port left reserved by a crash (its mapping never got created, or was deleted but the port not freed): ' +
          'records an audited PublicPortReleased (LocalPortReleased with --client) with the operator and reason. ' +
          'Refuses a port a live mapping uses (delete the mapping instead) unless --force',
      )
      .argument('<port>', 'the public port (or, with --client, the local port)', portArg)
      .option('--client <client_id>', "release this source client's local port instead of a public port", idArg)
      .requiredOption('--reason <text>', 'why (recorded in the log)')
      .option('--operator <name>', 'who decides, recorded as the actor', defaultOperator())
      .option('--force', 'release even a port a live mapping uses, or one reserved moments ago'),
  ).action(async (port: number, o: CtlTarget & { client?: number; reason: string; operator: string; force?: boolean }) => {
    await runCtl(o, { readModels: false }, async (opened) => {
      const { releasePort } = await import('./ctl-ports.js');
      const reason = parseOr('--reason', Reason, o.reason);
      const operator = parseOr('--operator', OperatorName, o.operator);
      const result = await releasePort({
        store: opened.store,
        port,
        ...(o.client !== undefined ? { clientId: o.client } : {}),
        reason,
        actor: { kind: 'operator', id: operator },
        force: o.force === true,
      });
      process.stdout.write(JSON.stringify(result) + '\n');
      process.stderr.write(
        `tunnox: released ${result.kind} port ${port}${result.client_id === null ? '' : ` of client ${result.client_id}`} held by mapping ${result.held_by} ` +
          `(${result.holder}) at position ${result.position} (${opened.mode})\n`,
      );
    });
  });
  const apikeys = ctl.command('apikeys').description(
    'admin API keys kept in the event log (only their SHA-256 is stored): the API accepts one as soon as it is made and refuses it within a second of its revocation',
  );
  withTarget(
    apikeys
      .command('create')
      .description('make a key (tnx_<apikey_id>_<secret>) and print it once; every event it issues names apikey_id as its actor')
      .requiredOption('--name <name>', 'what the key is for, e.g. billing-sync')
      .option('--operator <name>', 'who makes it, recorded as the actor', defaultOperator())
      .option('--json', 'print {apikey_id, name, key, position}'),
  ).action(async (o: CtlTarget & { name: string; operator: string; json?: boolean }) => {
    await runCtl(o, { readModels: false }, async (opened) => {
      const { ctlCreateApiKey } = await import('./ctl-apikeys.js');
      const name = parseOr('--name', OperatorName, o.name);
      const operator = parseOr('--operator', OperatorName, o.operator);
      const created = await ctlCreateApiKey(opened.store, name, { kind: 'operator', id: operator });
      process.stdout.write(o.json ? JSON.stringify(created) + '\n' : created.key + '\n');
      process.stderr.write(`tunnox: API key ${created.apikey_id} (${name}) created at position ${created.position} (${opened.mode}); the key is shown only now\n`);
    });
  });
  withTarget(
    apikeys
      .command('list')
      .description('the keys (active ones; --all with the revoked), from the read models')
      .option('--all', 'include revoked keys')
      .option('--json', 'one JSON object {keys, behind}'),
  ).action(async (o: CtlTarget & { all?: boolean; json?: boolean }) => {
    await runCtl(o, { readModels: true }, async (opened) => {
      const { ctlListApiKeys, formatKeyList } = await import('./ctl-apikeys.js');
      const list = await ctlListApiKeys(opened.store, needDb(opened), { all: o.all === true });
      process.stdout.write(o.json ? JSON.stringify(list) + '\n' : formatKeyList(list).join('\n') + '\n');
      if (list.behind > 0) process.stderr.write(`tunnox: the read models are ${list.behind} events behind the log (is the projector running?); newer keys are not listed yet\n`);
    });
  });
  withTarget(
    apikeys
      .command('revoke')
      .description('revoke a key: an audited ApiKeyRevoked with the operator and reason; the API refuses the key within a second')
      .argument('<apikey_id>', 'the key id (16 hex digits, as `apikeys list` shows)')
      .requiredOption('--reason <text>', 'why (recorded in the log)')
      .option('--operator <name>', 'who decides, recorded as the actor', defaultOperator()),
  ).action(async (keyId: string, o: CtlTarget & { reason: string; operator: string }) => {
    await runCtl(o, { readModels: false }, async (opened) => {
      const { ctlRevokeApiKey } = await import('./ctl-apikeys.js');
      const reason = parseOr('--reason', Reason, o.reason);
      const operator = parseOr('--operator', OperatorName, o.operator);
      const res = await ctlRevokeApiKey(opened.store, keyId, reason, { kind: 'operator', id: operator });
      process.stdout.write(JSON.stringify(res) + '\n');
      process.stderr.write(res.revoked ? `tunnox: API key ${keyId} revoked at position ${res.position}\n` : `tunnox: API key ${keyId} was already revoked\n`);
    });
  });
  return ctl;
}
