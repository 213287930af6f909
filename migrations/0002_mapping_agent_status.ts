import { sql, type Kysely } from 'kysely';

// What the agents report about each side of a mapping (MappingAgentStatusReported), folded by the
// mappings projection into `status` ('pending' | 'active' | 'error' | 'disabled') and `error`.
// A side's status is null until its agent reports (pending); `*_session_id` is the control session
// that reported it, so that session's end makes the side pending again.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('mappings')
    .addColumn('error', 'text')
    .addColumn('source_status', 'text')
    .addColumn('source_error', 'text')
    .addColumn('source_session_id', 'text')
    .addColumn('target_status', 'text')
    .addColumn('target_error', 'text')
    .addColumn('target_session_id', 'text')
    .execute();
  // Until now 'active' only meant "enabled": nothing is known about the agents yet.
  await sql`update mappings set status = 'pending' where status = 'active'`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`update mappings set status = 'active' where status in ('pending', 'error')`.execute(db);
  await db.schema
    .alterTable('mappings')
    .dropColumn('error')
    .dropColumn('source_status')
    .dropColumn('source_error')
    .dropColumn('source_session_id')
    .dropColumn('target_status')
    .dropColumn('target_error')
    .dropColumn('target_session_id')
    .execute();
}
