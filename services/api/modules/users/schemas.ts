import { z } from 'zod';
import type { UserRow } from '../../../../shared/db/schema.js';
import { Timestamp, UserId, Username, iso } from '../../schemas.js';

const NamedTier = z.enum(['unlimited', 'free', 'pro', 'enterprise']);

export const CreateUserBody = z.strictObject({
  username: Username,
  email: z.email().max(254),
  tier: NamedTier.optional().describe("the user's quota tier (default: the server's --default-tier)"),
});

export const PatchUserBody = z
  .strictObject({ username: Username.optional(), email: z.email().max(254).optional() })
  .refine((b) => b.username !== undefined || b.email !== undefined, { message: 'name at least one of username, email' });

const LimitIn = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable();
const LimitOut = z.number().int().nullable();

/** PUT /users/{id}/quota: a tier (default unlimited) with any limits overridden; null is no limit. */
export const PutQuotaBody = z.strictObject({
  tier: NamedTier.optional(),
  max_clients: LimitIn.optional(),
  max_mappings: LimitIn.optional(),
  max_active_mappings: LimitIn.optional(),
  max_connections_per_mapping: LimitIn.optional(),
  total_bandwidth_limit: LimitIn.optional().describe('bytes per second across the user\'s tunnels'),
  monthly_traffic_limit: LimitIn.optional().describe('bytes per calendar month (UTC)'),
});

export const QuotaView = z.object({
  user_id: UserId,
  tier: z.enum(['unlimited', 'free', 'pro', 'enterprise', 'custom']),
  max_clients: LimitOut,
  max_mappings: LimitOut,
  max_active_mappings: LimitOut,
  max_connections_per_mapping: LimitOut,
  total_bandwidth_limit: LimitOut,
  monthly_traffic_limit: LimitOut,
  current_clients: z.number().int(),
  current_mappings: z.number().int(),
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
