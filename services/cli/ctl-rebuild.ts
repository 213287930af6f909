import type { NatsConnection } from '@nats-io/nats-core';
import { CLIENT_STATE_COLUMNS, MAPPING_STATE_COLUMNS, clientStateOf, createStatePublisher, stateStreamName, type EntityUpdate } from '../../shared/bus/state.js';
import type { Db, DbTx } from '../../shared/db/connect.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Logger } from '../../shared/platform/logger.js';
import { createStateOutbox } from '../projector/state-feed.js';
import { READ_MODEL_PROJECTION } from '../projector/readModels.js';
import { rebuildAndCompare, type RebuildReport, type RowDifference } from '../projector/shadow.js';

// `tunnox ctl projections rebuild --verify | --swap`.

export interface CtlRebuildOptions {
  store: EventStore;
  db: Db;
  logger: Logger;
  swap: boolean;
  maxDifferences?: number;
  /**
   * Cluster mode: the edges build their view from the state stream, so the entities a swap changed
   * are put in the projector's state outbox (in the swap transaction) and published at once.
   */
  cluster?: { nc: NatsConnection; streamName: string; subjectPrefix: string };
}

/** The changed entities' new states as outbox rows, labelled with the checkpoint (mappings first, as the projector does). */
async function enqueueStates(tx: DbTx, changed: RebuildReport['changed_entities'], version: number): Promise<void> {
  const updates: EntityUpdate[] = [];
  if (changed.mappings.length > 0) {
    const rows = await tx.selectFrom('mappings').select(MAPPING_STATE_COLUMNS).where('mapping_id', 'in', changed.mappings).execute();
    const found = new Map(rows.map((r) => [r.mapping_id, r]));
    for (const id of changed.mappings) updates.push({ kind: 'mapping', id, version, state: found.get(id) ?? null });
  }
  if (changed.clients.length > 0) {
    const rows = await tx.selectFrom('clients').select(CLIENT_STATE_COLUMNS).where('client_id', 'in', changed.clients).execute();
    const found = new Map(rows.map((r) => [r.client_id, r]));
    for (const id of changed.clients) {
      const row = found.get(id);
      updates.push({ kind: 'client', id, version, state: row ? clientStateOf(row) : null });
    }
  }
  if (updates.length > 0) await tx.insertInto('state_outbox').values(updates.map((u) => ({ payload: JSON.stringify(u) }))).execute();
}

export async function ctlRebuild(o: CtlRebuildOptions): Promise<RebuildReport & { published: number | null }> {
  const report = await rebuildAndCompare({
    store: o.store,
    db: o.db,
    logger: o.logger,
    swap: o.swap,
    ...(o.maxDifferences !== undefined ? { maxDifferences: o.maxDifferences } : {}),
    ...(o.cluster ? { onSwapped: enqueueStates } : {}),
  });
  let published: number | null = null;
  if (o.cluster && report.swapped && !report.identical) {
    // What a running projector would publish with its next commit, published now. Publishing twice
    // (it may flush at the same moment) is harmless: same message ids, stale versions dropped.
    const publisher = await createStatePublisher({ nc: o.cluster.nc, stream: stateStreamName(o.cluster.streamName), prefix: o.cluster.subjectPrefix });
    const outbox = createStateOutbox({ db: o.db, publisher, logger: o.logger, checkpoint: READ_MODEL_PROJECTION });
    published = await outbox.flush();
    await outbox.stop();
  }
  return { ...report, published };
}

function value(v: unknown): string {
  return JSON.stringify(v) ?? 'undefined';
}

function keyText(d: RowDifference): string {
  return Object.entries(d.key)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

/** The readable report: one line per table, one per differing row, then the verdict. */
export function formatReport(r: RebuildReport & { published?: number | null }): string[] {
  const lines = [`replayed ${r.events} events into shadow tables; compared with the live read models at checkpoint ${r.position}${r.skipped.length ? ` (operator-skipped: ${r.skipped.join(', ')})` : ''}`];
  if (r.head > r.position) {
    lines.push(`note: the log goes on to position ${r.head}; the read models have not projected its last ${r.head - r.position} position(s) yet (a running projector will; a halted one says why in its log)`);
  }
  for (const t of r.tables) {
    lines.push(`${t.table}: ${t.live_rows} live, ${t.rebuilt_rows} rebuilt, ${t.differing_rows === 0 ? 'identical' : `${t.differing_rows} differing`}`);
  }
  for (const d of r.differences) {
    const where = `  ${d.table} ${keyText(d)}:`;
    if (d.kind === 'only_live') lines.push(`${where} only in the live table (the replay has no such row)`);
    else if (d.kind === 'only_rebuilt') lines.push(`${where} missing from the live table (the replay has it)`);
    else lines.push(`${where} ${d.columns!.map((c) => `${c.column}: live ${value(c.live)}, rebuilt ${value(c.rebuilt)}`).join('; ')}`);
  }
  if (r.truncated) lines.push('  ... (more differences; --max-diffs N to list more)');
  const total = r.tables.reduce((n, t) => n + t.differing_rows, 0);
  lines.push(r.identical ? 'identical' : `${total} differing row${total === 1 ? '' : 's'}`);
  if (r.swapped) {
    lines.push(
      r.identical
        ? 'nothing to swap'
        : `swapped in one transaction at checkpoint ${r.position}: ${r.swapped.tables.join(', ')} (${r.swapped.deleted} live rows replaced or removed, ${r.swapped.inserted} rebuilt rows inserted)` +
            (r.published == null ? '' : `; ${r.published} entity states published to the edges' state stream`),
    );
  }
  return lines;
}
