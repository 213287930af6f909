import pg from 'pg';
import { sql } from 'kysely';
import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import type { Db, DbTx } from '../db/connect.js';
import { TunnoxError } from '../platform/errors.js';
import { silentLogger, type Logger } from '../platform/logger.js';
import { Delivery, DeliveryOutcome } from './delivery.js';
import { EventStoreUnavailableError, WrongExpectedRevisionError } from './errors.js';
import { assertStorable, assertStreamName, pageOf, toStoredEvent } from './stored.js';
import type { AppendOptions, AppendResult, EventStore, ExpectedRevision, ReadStreamOptions, ReadStreamResult, SubscribeOptions, Subscription } from './types.js';

/** NOTIFY channel raised by every append (payload: the new position). */
export const EVENTS_CHANNEL = 'tnx_events';

// Key of the transaction-scoped advisory lock that serializes appends. Holding it from before the
// position is drawn (bigserial) until commit makes positions become visible strictly in order,
// so a reader that has seen position N can never later discover a committed N-1.
export const APPEND_LOCK_KEY = 0x746e7845; // "tnxE"

const STREAM_VERSION_CONSTRAINT = 'tnx_events_stream_version_uq';
const EVENT_ID_CONSTRAINT = 'tnx_events_event_id_key';
const SUBSCRIPTION_BATCH = 100;

export interface PostgresEventStoreOptions {
  db: Db;
  /** Used only for the LISTEN connection; owned by the caller (close() does not end it). */
  pool: pg.Pool;
  logger?: Logger;
  /** How often subscribers re-read when no NOTIFY arrives (a lost notification only delays). */
  pollIntervalMs?: number;
}

interface EventRow {
  position: number;
  stream: string;
  version: number;
  envelope: unknown;
}

/**
 * The event log in PostgreSQL (standalone mode), table tnx_events. Revision = the stream's
 * version (its event count). Envelope ids are unique forever, so dedup has no window.
 */
export class PostgresEventStore implements EventStore {
  readonly kind = 'postgres' as const;
  readonly #db: Db;
  readonly #logger: Logger;
  readonly #pollIntervalMs: number;
  readonly #notifier: PgNotifier;
  readonly #subscriptions = new Set<Subscription>();
  #closed = false;

  constructor(opts: PostgresEventStoreOptions) {
    this.#db = opts.db;
    this.#logger = (opts.logger ?? silentLogger()).child({ component: 'eventstore', store: 'postgres' });
    this.#pollIntervalMs = opts.pollIntervalMs ?? 500;
    this.#notifier = new PgNotifier(opts.pool, this.#logger);
  }

  async append(stream: string, event: EventEnvelope, options: AppendOptions): Promise<AppendResult> {
    assertStreamName(stream);
    assertStorable(event);
    this.#assertOpen();
    const expected = options.expectedRevision;
    try {
      return await this.#db.transaction().execute(async (tx) => {
        await sql`select pg_advisory_xact_lock(${APPEND_LOCK_KEY})`.execute(tx);
        // Dedup before the revision check: a retried append whose first attempt did commit must be
        // reported as a duplicate, not as a conflict with itself.
        const original = await tx
          .selectFrom('tnx_events')
          .select(['position', 'stream'])
          .where('event_id', '=', event.id)
          .executeTakeFirst();
        if (original) {
          return { position: original.position, revision: await currentVersion(tx, original.stream), duplicate: true };
        }
        const version = await currentVersion(tx, stream);
        if (!revisionMatches(expected, version)) throw new WrongExpectedRevisionError(stream, describe(expected, version));
        const inserted = await tx
          .insertInto('tnx_events')
          .values({ stream, version: version + 1, event_id: event.id, type: event.type, envelope: JSON.stringify(event) })
          .returning('position')
          .executeTakeFirstOrThrow();
        // Delivered to listeners at commit, i.e. only once the row is visible.
        await sql`select pg_notify(${EVENTS_CHANNEL}, ${String(inserted.position)})`.execute(tx);
        return { position: inserted.position, revision: version + 1, duplicate: false };
      });
    } catch (err) {
      if (constraintOf(err) === EVENT_ID_CONSTRAINT) return this.#duplicateOf(event.id, err);
      throw translatePgError(err, `append to ${stream}`, { stream, expected });
    }
  }

  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<ReadStreamResult> {
    assertStreamName(stream);
    this.#assertOpen();
    const { afterPosition, limit } = pageOf(options);
    if (afterPosition === 0 && limit === undefined) {
      const rows = await this.#query(`read ${stream}`, () =>
        this.#db
          .selectFrom('tnx_events')
          .select(['position', 'stream', 'version', 'envelope'])
          .where('stream', '=', stream)
          .orderBy('version')
          .execute(),
      );
      const events = rows.map(toEvent);
      return { events, revision: events.length === 0 ? null : events.length };
    }
    // The page and the stream's revision in one statement (one snapshot), via the (stream, version)
    // index; LIMIT NULL is no limit.
    const { rows } = await this.#query(`read ${stream}`, () =>
      sql<{ revision: number | null } & { [K in keyof EventRow]: EventRow[K] | null }>`
        select r.revision, p.position, p.stream, p.version, p.envelope
        from (select max(version) as revision from tnx_events where stream = ${stream}) r
        left join lateral (
          select position, stream, version, envelope from tnx_events
          where stream = ${stream} and position > ${afterPosition}
          order by version limit ${limit ?? null}
        ) p on true
        order by p.version`.execute(this.#db),
    );
    const revision = rows[0]?.revision == null ? null : Number(rows[0].revision);
    const events = rows.filter((r): r is typeof r & EventRow => r.position !== null).map(toEvent);
    return { events, revision };
  }

  async readLastEvent(stream: string): Promise<{ event: StoredEvent | null; revision: number | null }> {
    assertStreamName(stream);
    this.#assertOpen();
    const row = await this.#query(`read last event of ${stream}`, () =>
      this.#db
        .selectFrom('tnx_events')
        .select(['position', 'stream', 'version', 'envelope'])
        .where('stream', '=', stream)
        .orderBy('version', 'desc')
        .limit(1)
        .executeTakeFirst(),
    );
    if (!row) return { event: null, revision: null };
    const event = toEvent(row);
    return { event, revision: event.version };
  }

  async readAll(afterPosition: number, limit: number): Promise<StoredEvent[]> {
    this.#assertOpen();
    return this.#readAll(afterPosition, limit);
  }

  async #readAll(afterPosition: number, limit: number): Promise<StoredEvent[]> {
    if (limit <= 0) return [];
    const rows = await this.#query('read all', () =>
      this.#db
        .selectFrom('tnx_events')
        .select(['position', 'stream', 'version', 'envelope'])
        .where('position', '>', afterPosition)
        .orderBy('position')
        .limit(limit)
        .execute(),
    );
    return rows.map(toEvent);
  }

  async headPosition(): Promise<number> {
    this.#assertOpen();
    const row = await this.#query('read head position', () =>
      this.#db
        .selectFrom('tnx_events')
        .select((eb) => eb.fn.coalesce(eb.fn.max('position'), sql<number>`0`).as('head'))
        .executeTakeFirstOrThrow(),
    );
    return Number(row.head);
  }

  async subscribe(options: SubscribeOptions): Promise<Subscription> {
    this.#assertOpen();
    const logger = this.#logger.child({ subscription: options.name });
    const delivery = new Delivery(options, logger);
    const wake = new Wakeup();
    delivery.onStop(() => wake.signal());
    const unlisten = this.#notifier.add(() => wake.signal());

    const run = async (): Promise<void> => {
      let cursor = options.afterPosition;
      while (!delivery.stopped) {
        let batch: StoredEvent[];
        try {
          batch = await this.#readAll(cursor, SUBSCRIPTION_BATCH);
        } catch (err) {
          if (!(err instanceof EventStoreUnavailableError)) {
            delivery.fail(err);
            return;
          }
          // The database is away: keep the subscription and try again; nothing was delivered.
          logger.warn({ err }, 'event store unavailable; subscription retrying');
          await wake.wait(this.#pollIntervalMs);
          continue;
        }
        for (const event of batch) {
          const outcome = await delivery.deliver(event);
          if (outcome === DeliveryOutcome.stopped) return;
          cursor = event.position;
        }
        if (batch.length < SUBSCRIPTION_BATCH) {
          this.#notifier.ensureListening();
          await wake.wait(this.#pollIntervalMs);
        }
      }
    };
    const done = run()
      .catch((err: unknown) => delivery.fail(err))
      .finally(() => unlisten());

    const subscription: Subscription = {
      stop: async () => {
        const fromHandler = delivery.stop();
        this.#subscriptions.delete(subscription);
        if (!fromHandler) await done;
      },
    };
    this.#subscriptions.add(subscription);
    return subscription;
  }

  /** Stops every subscription and the LISTEN connection. The db and pool belong to the caller. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#subscriptions].map((s) => s.stop()));
    await this.#notifier.close();
  }

  async #duplicateOf(eventId: string, cause: unknown): Promise<AppendResult> {
    const original = await this.#query('read duplicate', () =>
      this.#db.selectFrom('tnx_events').select(['position', 'stream']).where('event_id', '=', eventId).executeTakeFirst(),
    );
    if (!original) throw translatePgError(cause, 'append', {});
    const version = await this.#query('read stream version', () => currentVersion(this.#db, original.stream));
    return { position: original.position, revision: version, duplicate: true };
  }

  async #query<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw translatePgError(err, what, {});
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new EventStoreUnavailableError('the event store is closed');
  }
}

async function currentVersion(db: Db | DbTx, stream: string): Promise<number> {
  const row = await db
    .selectFrom('tnx_events')
    .select((eb) => eb.fn.max('version').as('version'))
    .where('stream', '=', stream)
    .executeTakeFirst();
  return row?.version == null ? 0 : Number(row.version);
}

function revisionMatches(expected: ExpectedRevision, version: number): boolean {
  if (expected === 'any') return true;
  if (expected === 'no_stream') return version === 0;
  return expected === version;
}

function describe(expected: ExpectedRevision, actual: number): string {
  return `${String(expected)} (stream is at ${actual === 0 ? 'no_stream' : actual})`;
}

function toEvent(row: EventRow): StoredEvent {
  return toStoredEvent(row.envelope, row.position, row.version, row.stream);
}

function constraintOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  return e && e.code === '23505' && typeof e.constraint === 'string' ? e.constraint : undefined;
}

// SQLSTATE classes meaning "the database is not reachable or not accepting work right now":
// 08 connection exception, 53 insufficient resources, 57P admin/crash shutdown, 3D missing database.
const UNAVAILABLE_SQLSTATE = /^(08|53|57P|3D)/;

/**
 * The one place PostgreSQL failures become event-store errors. Domain errors pass through; a
 * (stream, version) unique violation is a lost race and reads as a revision conflict; anything
 * that is not a SQL-level error (socket closed, pool timeout, refused) means unavailable.
 */
export function translatePgError(err: unknown, what: string, ctx: { stream?: string; expected?: ExpectedRevision }): unknown {
  if (err instanceof TunnoxError) return err;
  if (constraintOf(err) === STREAM_VERSION_CONSTRAINT) {
    return new WrongExpectedRevisionError(ctx.stream ?? '?', String(ctx.expected ?? '?'), { cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  const isSqlState = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
  if (!isSqlState || UNAVAILABLE_SQLSTATE.test(code)) {
    const message = err instanceof Error ? err.message : String(err);
    return new EventStoreUnavailableError(`${what} failed: ${message}`, { cause: err });
  }
  return err;
}

/** A one-slot wake-up signal: a signal that arrives while nobody waits is kept for the next wait. */
class Wakeup {
  #pending = false;
  #resolve: (() => void) | null = null;

  signal(): void {
    if (this.#resolve) {
      const resolve = this.#resolve;
      this.#resolve = null;
      resolve();
    } else {
      this.#pending = true;
    }
  }

  wait(ms: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#resolve = null;
        resolve();
      }, ms);
      this.#resolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/**
 * One LISTEN connection per store, shared by its subscriptions and held only while at least one
 * exists. It is a client of its own (same settings as the pool), not a pooled one: it lives for as
 * long as the subscriptions, and its errors must never surface as pool errors. If it dies,
 * subscriptions keep polling and the next poll re-establishes it.
 */
class PgNotifier {
  readonly #pool: pg.Pool;
  readonly #logger: Logger;
  readonly #listeners = new Set<() => void>();
  #conn: { client: pg.Client; end: () => Promise<void> } | null = null;
  #connecting: Promise<void> | null = null;
  #closed = false;

  constructor(pool: pg.Pool, logger: Logger) {
    this.#pool = pool;
    this.#logger = logger;
  }

  add(listener: () => void): () => void {
    this.#listeners.add(listener);
    this.ensureListening();
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) void this.#release();
    };
  }

  ensureListening(): void {
    if (this.#closed || this.#conn || this.#connecting || this.#listeners.size === 0) return;
    this.#connecting = this.#connect()
      .catch((err: unknown) => this.#logger.warn({ err }, 'LISTEN connection failed; subscribers keep polling'))
      .finally(() => {
        this.#connecting = null;
      });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    await this.#connecting;
    await this.#release();
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#pool.options);
    let ending: Promise<void> | undefined;
    const end = (): Promise<void> => (ending ??= client.end().catch(() => undefined));
    // Stays attached for the client's whole life: an 'error' without a listener would crash the process.
    client.on('error', (err) => {
      if (this.#conn?.client === client) {
        this.#conn = null;
        this.#logger.warn({ err }, 'LISTEN connection lost; subscribers keep polling');
      }
      void end();
    });
    client.on('notification', (n) => {
      if (n.channel === EVENTS_CHANNEL && this.#conn?.client === client) this.#wakeAll();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${EVENTS_CHANNEL}`);
    } catch (err) {
      await end();
      throw err;
    }
    if (this.#closed || this.#listeners.size === 0) {
      await end();
      return;
    }
    this.#conn = { client, end };
    // Appends committed before LISTEN took effect raised no notification for us.
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const listener of this.#listeners) listener();
  }

  async #release(): Promise<void> {
    const conn = this.#conn;
    this.#conn = null;
    await conn?.end();
  }
}
