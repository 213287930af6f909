import type { Db } from '../../../../shared/db/connect.js';
import type { UserRow } from '../../../../shared/db/schema.js';

export function findUser(db: Db, userId: number): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('user_id', '=', userId).executeTakeFirst();
}
