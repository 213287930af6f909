import { sql } from 'kysely';
import type { Db, DbTx } from '../../shared/db/connect.js';

/** The committed position of a projection; 0 when it never ran. */
export async function readCheckpoint(db: Db | DbTx, name: string): Promise<number> {
  const row = await db.selectFrom('projection_checkpoints').select('position').where('name', '=', name).executeTakeFirst();
  return row?.position ?? 0;
}

/** Creates the checkpoint row at 0 if absent, so lockCheckpoint always has a row to lock. */
export async function ensureCheckpoint(db: Db | DbTx, name: string): Promise<void> {
  await db
    .insertInto('projection_checkpoints')
    .values({ name, position: 0 })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
}

/**
 * Reads the checkpoint with a row lock held until the transaction ends (creating the row at 0 if
 * it is missing: an upsert locks the row in one round trip). Two runners with the same name (two
 * nodes, or a rebuild next to a live projector) serialize here, and the one that waited sees the
 * other's committed position, so an event is applied once.
 */
export async function lockCheckpoint(tx: DbTx, name: string): Promise<number> {
  const row = await tx
    .insertInto('projection_checkpoints')
    .values({ name, position: 0 })
    .onConflict((oc) => oc.column('name').doUpdateSet((eb) => ({ position: eb.ref('projection_checkpoints.position') })))
    .returning('position')
    .executeTakeFirstOrThrow();
  return row.position;
}

export async function saveCheckpoint(tx: DbTx, name: string, position: number): Promise<void> {
  await tx
    .updateTable('projection_checkpoints')
    .set({ position, updated_at: sql`now()` })
    .where('name', '=', name)
    .execute();
}
