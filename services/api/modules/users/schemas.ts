import { z } from 'zod';
import type { UserRow } from '../../../../shared/db/schema.js';
import { Timestamp, UserId, Username, iso } from '../../schemas.js';

export const CreateUserBody = z.strictObject({
  username: Username,
  email: z.email().max(254),
});

export const UserView = z.object({
  user_id: UserId,
  username: z.string(),
  email: z.string(),
  status: z.enum(['active', 'disabled']),
  created_at: Timestamp,
  updated_at: Timestamp,
});
export type UserView = z.infer<typeof UserView>;

export const UserAccepted = z.object({ user_id: UserId }).describe('Recorded; the read model has not caught up yet (GET Location)');

export function userView(row: UserRow): UserView {
  return {
    user_id: row.user_id,
    username: row.username,
    email: row.email,
    status: row.status === 'disabled' ? 'disabled' : 'active',
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at),
  };
}
