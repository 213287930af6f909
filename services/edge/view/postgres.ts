import type { ChangeBus } from '../../../shared/contracts/notices.js';
import type { Db } from '../../../shared/db/connect.js';
import type { Logger } from '../../../shared/platform/logger.js';
import { CLIENT_STATE_COLUMNS, MAPPING_STATE_COLUMNS, clientStateOf } from '../../../shared/bus/state.js';
import type { EntityUpdate, MappingState } from './view.js';
import type { MemoryEdgeView } from './view.js';

/** Read-model projection whose checkpoint labels a snapshot. */
const READ_MODELS = 'read-models';

/**
 * Reads, in one REPEATABLE READ snapshot, the read-model checkpoint P and every client whose
 * config_version is above `after` with all mappings those clients take part in. Every change an
 * edge cares about moves config_version to the event's position (ClientRegistered sets it, every
 * credential change and every mapping change on the mapping's target and source raise it), so this is exactly what changed
 * since a snapshot at `after`; a known mapping of such a client that is no longer there was deleted.
 * Everything is labelled with P: the snapshot is the read models as of P.
 */
export async function readSnapshot(
  db: Db,
  after: number,
  knownMappingsOf: (clientId: number) => Iterable<number>,
): Promise<{ position: number; updates: EntityUpdate[] }> {
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .execute(async (tx) => {
      const cp = await tx.selectFrom('projection_checkpoints').select('position').where('name', '=', READ_MODELS).executeTakeFirst();
      const position = cp?.position ?? 0;
      const clients = await tx.selectFrom('clients').select(CLIENT_STATE_COLUMNS).where('config_version', '>', after).orderBy('client_id').execute();
      if (clients.length === 0) return { position, updates: [] };
      const ids = clients.map((c) => c.client_id);
      const mappings: MappingState[] = await tx
        .selectFrom('mappings')
        .select(MAPPING_STATE_COLUMNS)
        .where((eb) => eb.or([eb('source_client_id', 'in', ids), eb('target_client_id', 'in', ids)]))
        .orderBy('mapping_id')
        .execute();
      const present = new Set(mappings.map((m) => m.mapping_id));
      const gone = new Set<number>();
      for (const id of ids) for (const m of knownMappingsOf(id)) if (!present.has(m)) gone.add(m);
      // Mappings first: a client's config is read after its mappings are in place.
      const updates: EntityUpdate[] = [
        ...mappings.map((state): EntityUpdate => ({ kind: 'mapping', id: state.mapping_id, version: position, state })),
        ...[...gone].map((id): EntityUpdate => ({ kind: 'mapping', id, version: position, state: null })),
        // A deleted client's row stays (deleted_at set), so its deletion arrives here as a tombstone.
        ...clients.map((row): EntityUpdate => ({ kind: 'client', id: row.client_id, version: position, state: clientStateOf(row) })),
      ];
      return { position, updates };
    });
}

export interface ReadModelViewFeed {
  /** The read-model position the view is as of. */
  readonly position: number;
  /** Re-reads what changed now (also what every notice triggers). */
  refresh(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Standalone mode's feed: the read models in the process's own PostgreSQL, re-read incrementally
 * on every change notice (the projector publishes a `projection` notice per committed event, also
 * for ClientRegistered, which has no client-config notice), and on a timer in case a notice is
 * lost. Refreshes never overlap; notices during one fold into a single follow-up. Ready after the
 * first full snapshot.
 */
export async function startReadModelViewFeed(opts: {
  db: Db;
  bus: ChangeBus;
  view: MemoryEdgeView;
  logger: Logger;
  /** Safety net for a lost notice: refresh this often anyway. Default 30 s. */
  refreshIntervalMs?: number;
}): Promise<ReadModelViewFeed> {
  const log = opts.logger.child({ component: 'view-feed', feed: 'read-models' });
  const { view } = opts;
  let after = -1;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const once = async (): Promise<void> => {
    const snap = await readSnapshot(opts.db, after, (clientId) => view.mappingsOf(clientId));
    if (stopped) return;
    view.apply(snap.updates);
    after = Math.max(after, snap.position);
  };
  const refresh = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await once().catch((err: unknown) => log.error({ err }, 'could not refresh the edge view; the next notice retries'));
      } while (again && !stopped);
      running = undefined;
    })();
    return running;
  };
  // Subscribed before the first snapshot so no notice in between is missed.
  const unsubscribe = opts.bus.subscribe(() => void refresh());
  await once();
  view.markReady();
  log.info({ position: after, ...view.size() }, 'edge view loaded from the read models');
  const timer = setInterval(() => void refresh(), opts.refreshIntervalMs ?? 30_000);
  timer.unref();
  return {
    get position() {
      return after;
    },
    refresh,
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await running;
    },
  };
}
