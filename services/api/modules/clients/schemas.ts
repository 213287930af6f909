import { z } from 'zod';
import { ClientDescription, ClientId, ClientName, Timestamp, UserId, iso } from '../../schemas.js';
import type { ClientReadRow } from './queries.js';

export const CreateClientBody = z.strictObject({
  user_id: UserId,
  client_name: ClientName,
  client_desc: ClientDescription.optional().describe('Free text; recorded in the event log, not shown by GET yet'),
});

export const ClientView = z.object({
  client_id: ClientId,
  user_id: UserId.nullable(),
  client_name: z.string(),
  client_type: z.enum(['managed', 'anonymous']),
  status: z.enum(['online', 'offline']),
  enabled: z.boolean().describe('A disabled client cannot log in; its session and session tokens ended when it was disabled'),
  node_id: z.string().nullable(),
  last_seen: Timestamp.nullable(),
  created_at: Timestamp,
});
export type ClientView = z.infer<typeof ClientView>;

/** The create response is the only place the auth code ever appears. */
export const CreatedClient = ClientView.omit({ last_seen: true }).extend({
  auth_code: z.string().describe('Shown once; only its hash is stored'),
  client_type: z.literal('managed'),
});

export const ClientAccepted = z
  .object({ client_id: ClientId, auth_code: z.string() })
  .describe('Recorded; the read model has not caught up yet (GET Location). The auth code is still shown only here.');

export function clientView(row: ClientReadRow): ClientView {
  return {
    client_id: row.client_id,
    user_id: row.user_id,
    client_name: row.client_name,
    client_type: row.client_type,
    status: row.status,
    enabled: row.enabled,
    node_id: row.node_id,
    last_seen: row.last_seen_at === null ? null : iso(row.last_seen_at),
    created_at: iso(row.created_at),
  };
}

/** PATCH /clients/{id}: what may change (more fields come with the control-plane work). */
export const PatchClientBody = z
  .strictObject({
    enabled: z.boolean().optional().describe('false: the client cannot log in, its live session and session tokens end at once; true: auth code logins work again'),
    client_name: CreateClientBody.shape.client_name.optional().describe('a new display name'),
  })
  .refine((b) => b.enabled !== undefined || b.client_name !== undefined, { message: 'name at least one of enabled, client_name' });

export const RotatedAuthCode = z.object({
  client_id: ClientId,
  auth_code: z.string().describe('Shown once; the old code, and every session token issued before, no longer work'),
});
