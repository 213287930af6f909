import type { Db } from '../../../../shared/db/connect.js';
import type { UserRow } from '../../../../shared/db/schema.js';

export function findUser(db: Db, userId: number): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('user_id', '=', userId).executeTakeFirst();
}

/** One page of users in id order, after `after` (exclusive); fetches limit + 1 to know if more follow. */
export function listUsers(db: Db, q: { after: number; limit: number }): Promise<UserRow[]> {
  return db.selectFrom('users').selectAll().where('user_id', '>', q.after).orderBy('user_id').limit(q.limit + 1).execute();
}
