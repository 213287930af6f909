import type { Db } from '../../../../shared/db/connect.js';

/** Every column except secret_key: agents receive it pushed over their control connection only. */
export function findMapping(db: Db, mappingId: number) {
  return db
    .selectFrom('mappings')
    .select([
      'mapping_id',
      'user_id',
      'protocol',
      'source_client_id',
      'target_client_id',
      'target_host',
      'target_port',
      'local_host',
      'local_port',
      'public_port',
      'enabled',
      'status',
      'error',
      'version',
      'created_at',
      'updated_at',
    ])
    .where('mapping_id', '=', mappingId)
    .executeTakeFirst();
}
export type MappingReadRow = NonNullable<Awaited<ReturnType<typeof findMapping>>>;
