import type { Projection } from './projection.js';

export const usersProjection: Projection = {
  name: 'users',
  version: 1,
  handlers: {
    async UserCreated(tx, event) {
      const d = event.data;
      await tx
        .insertInto('users')
        .values({
          user_id: d.user_id,
          username: d.username,
          email: d.email,
          status: d.status,
          version: event.version,
          created_at: event.occurred_at,
          updated_at: event.occurred_at,
        })
        .onConflict((oc) => oc.column('user_id').doNothing())
        .execute();
    },
    async UserUpdated(tx, event) {
      const d = event.data;
      await tx
        .updateTable('users')
        .set({ username: d.username, email: d.email, version: event.version, updated_at: event.occurred_at })
        .where('user_id', '=', d.user_id)
        .execute();
    },
    async UserDeleted(tx, event) {
      await tx.deleteFrom('users').where('user_id', '=', event.data.user_id).execute();
    },
  },
};
