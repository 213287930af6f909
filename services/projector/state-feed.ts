import type { TypedStoredEvent } from '../../shared/contracts/events.js';
import type { Db, DbTx } from '../../shared/db/connect.js';
import { CLIENT_STATE_COLUMNS, EntityUpdateSchema, MAPPING_STATE_COLUMNS, clientStateOf, type EntityUpdate, type StatePublisher } from '../../shared/bus/state.js';
import type { Logger } from '../../shared/platform/logger.js';

/**
 * Hook the runner calls around each event it projects (see RunnerOptions.commitHook).
 * `inTransaction` wraps the projections' handlers inside the event's transaction; `afterCommit`
 * runs after the commit (and once before the subscription starts) and never rejects.
 */
export interface CommitHook {
  /** Once, before the runner subscribes. */
  start(): Promise<void>;
  inTransaction(tx: DbTx, event: TypedStoredEvent, apply: () => Promise<void>): Promise<void>;
  afterCommit(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Which edge-visible entities an event changes. Only these events change what an edge needs
 * (clients: id, type, auth code hash, config version, enabled, epoch, deletion; mappings: the
 * MappingState fields); presence
 * and agent status reports do not. A mapping change also changes both clients' config_version.
 * Read before the handlers run: a MappingDeleted's row is gone afterwards.
 */
async function touchedBy(tx: DbTx, event: TypedStoredEvent): Promise<{ clients: Set<number>; mappings: Set<number> }> {
  const clients = new Set<number>();
  const mappings = new Set<number>();
  switch (event.type) {
    case 'ClientRegistered':
    case 'ClientDisabled':
    case 'ClientEnabled':
    case 'ClientAuthCodeRotated':
    case 'ClientKicked':
    case 'ClientDeleted':
    case 'ClientExpired':
      clients.add(event.data.client_id);
      break;
    case 'MappingCreated':
      mappings.add(event.data.mapping_id);
      clients.add(event.data.target_client_id);
      if (event.data.source_client_id !== null) clients.add(event.data.source_client_id);
      break;
    case 'MappingDeleted':
    case 'MappingSecretRotated':
    case 'MappingUpdated': {
      mappings.add(event.data.mapping_id);
      const row = await tx
        .selectFrom('mappings')
        .select(['source_client_id', 'target_client_id'])
        .where('mapping_id', '=', event.data.mapping_id)
        .executeTakeFirst();
      if (row) {
        clients.add(row.target_client_id);
        if (row.source_client_id !== null) clients.add(row.source_client_id);
      }
      break;
    }
    default:
      break;
  }
  return { clients, mappings };
}

/**
 * The projector's writer of the config-update (state) stream, as a transactional outbox: in the
 * event's transaction, after the handlers ran, the new full state of every entity the event
 * touched (a tombstone for one that is gone) is written to `state_outbox`, labelled with the
 * event's position; after commit the rows are published in order and deleted. A crash between
 * commit and publish leaves the rows, and the next start (or the next commit, or the retry timer)
 * publishes them. Publishing twice is harmless: the Nats-Msg-Id (entity + version) deduplicates,
 * the publisher never lets an older version replace a newer one on the stream, and receivers
 * ignore versions they already hold.
 */
export function createStateOutbox(opts: {
  db: Db;
  publisher: StatePublisher;
  logger: Logger;
  /** The projection whose checkpoint labels a seed snapshot. */
  checkpoint: string;
  retryMs?: number;
}): CommitHook & {
  /** Publishes what is in the outbox now; resolves with how many updates went out. */
  flush(): Promise<number>;
} {
  const log = opts.logger.child({ component: 'state-outbox' });
  const retryMs = opts.retryMs ?? 2_000;
  let running: Promise<number> | undefined;
  let again = false;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;

  const publishPending = async (): Promise<number> => {
    let published = 0;
    for (;;) {
      const rows = await opts.db.selectFrom('state_outbox').select(['id', 'payload']).orderBy('id').limit(100).execute();
      if (rows.length === 0) return published;
      for (const row of rows) {
        if (stopped) return published;
        const update = EntityUpdateSchema.parse(JSON.parse(row.payload));
        await opts.publisher.publish(update);
        await opts.db.deleteFrom('state_outbox').where('id', '=', row.id).execute();
        published++;
      }
    }
  };

  const flush = (): Promise<number> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      let total = 0;
      do {
        again = false;
        try {
          total += await publishPending();
        } catch (err) {
          // NATS or PostgreSQL unavailable: the rows stay; try again shortly (and on the next commit).
          log.warn({ err }, 'publishing entity states failed; retrying');
          if (!stopped && !retryTimer) {
            retryTimer = setTimeout(() => {
              retryTimer = undefined;
              void flush();
            }, retryMs);
            retryTimer.unref();
          }
          break;
        }
      } while (again && !stopped);
      running = undefined;
      return total;
    })();
    return running;
  };

  /**
   * An empty stream next to non-empty read models (the first start of a projector that writes the
   * stream over an existing installation, or a stream deleted by hand): publish every client and
   * mapping as of the read models' checkpoint, read in one snapshot. The stream then holds the
   * full state and the outbox keeps it current. Anything a concurrent projector publishes is newer
   * and wins (the publisher drops older versions).
   */
  const seedIfEmpty = async (): Promise<void> => {
    if ((await opts.publisher.messages()) > 0) return;
    const snapshot = await opts.db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (tx) => {
        const cp = await tx.selectFrom('projection_checkpoints').select('position').where('name', '=', opts.checkpoint).executeTakeFirst();
        const mappings = await tx.selectFrom('mappings').select(MAPPING_STATE_COLUMNS).orderBy('mapping_id').execute();
        const clients = await tx.selectFrom('clients').select(CLIENT_STATE_COLUMNS).orderBy('client_id').execute();
        return { version: cp?.position ?? 0, mappings, clients };
      });
    const { version } = snapshot;
    for (const state of snapshot.mappings) await opts.publisher.publish({ kind: 'mapping', id: state.mapping_id, version, state });
    // Deleted clients go out as tombstones: no late stale state may bring them back.
    for (const row of snapshot.clients) await opts.publisher.publish({ kind: 'client', id: row.client_id, version, state: clientStateOf(row) });
    if (snapshot.clients.length > 0) log.info({ version, clients: snapshot.clients.length, mappings: snapshot.mappings.length }, 'seeded the empty state stream from the read models');
  };

  return {
    async start() {
      await flush();
      try {
        await seedIfEmpty();
      } catch (err) {
        // Not fatal: edges would start with what the stream has; the next start tries again.
        log.error({ err }, 'could not seed the empty state stream from the read models');
      }
    },
    async inTransaction(tx, event, apply) {
      const touched = await touchedBy(tx, event);
      await apply();
      if (touched.clients.size === 0 && touched.mappings.size === 0) return;
      const version = event.position;
      const updates: EntityUpdate[] = [];
      if (touched.mappings.size > 0) {
        const rows = await tx.selectFrom('mappings').select(MAPPING_STATE_COLUMNS).where('mapping_id', 'in', [...touched.mappings]).execute();
        const found = new Map(rows.map((r) => [r.mapping_id, r]));
        for (const id of touched.mappings) updates.push({ kind: 'mapping', id, version, state: found.get(id) ?? null });
      }
      if (touched.clients.size > 0) {
        const rows = await tx.selectFrom('clients').select(CLIENT_STATE_COLUMNS).where('client_id', 'in', [...touched.clients]).execute();
        const found = new Map(rows.map((r) => [r.client_id, r]));
        for (const id of touched.clients) {
          const row = found.get(id);
          updates.push({ kind: 'client', id, version, state: row ? clientStateOf(row) : null });
        }
      }
      // Mappings before clients: an edge pushes a client's config when the client's new
      // config_version arrives, and by then the mappings behind it are in its view.
      await tx.insertInto('state_outbox').values(updates.map((u) => ({ payload: JSON.stringify(u) }))).execute();
    },
    async afterCommit() {
      await flush();
    },
    flush,
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await running;
    },
  };
}
