import { z } from 'zod';
import { ClientId, Host, MappingId, Port, Timestamp, UserId, iso } from '../../schemas.js';
import type { MappingReadRow } from './queries.js';

/**
 * One body for both tcp kinds, told apart by source_client_id:
 * - client-to-client: source_client_id + local_port (+ local_host);
 * - public: no source_client_id; public_port optional (allocated from the configured range).
 * A single strict object (rather than a union) lets every error name its field.
 */
export const CreateMappingBody = z
  .strictObject({
    user_id: UserId,
    source_client_id: ClientId.optional().describe('Client-to-client: the agent that listens on local_port'),
    target_client_id: ClientId,
    protocol: z.literal('tcp').describe('Only tcp for now'),
    target_host: Host,
    target_port: Port,
    local_port: Port.optional().describe('Client-to-client only'),
    local_host: Host.optional().describe('Client-to-client only; default 127.0.0.1 on the agent'),
    public_port: Port.optional().describe('Public only; omitted = first free port of the range'),
  })
  .superRefine((b, ctx) => {
    if (b.source_client_id !== undefined) {
      if (b.local_port === undefined) ctx.addIssue({ code: 'custom', path: ['local_port'], message: 'required for a client-to-client mapping' });
      if (b.public_port !== undefined) ctx.addIssue({ code: 'custom', path: ['public_port'], message: 'not allowed with source_client_id' });
      if (b.source_client_id === b.target_client_id) {
        ctx.addIssue({ code: 'custom', path: ['target_client_id'], message: 'must differ from source_client_id' });
      }
    } else {
      if (b.local_port !== undefined) ctx.addIssue({ code: 'custom', path: ['local_port'], message: 'requires source_client_id' });
      if (b.local_host !== undefined) ctx.addIssue({ code: 'custom', path: ['local_host'], message: 'requires source_client_id' });
    }
  });

export const MappingView = z.object({
  mapping_id: MappingId,
  user_id: UserId,
  protocol: z.literal('tcp'),
  source_client_id: ClientId.nullable(),
  target_client_id: ClientId,
  target_host: z.string(),
  target_port: Port,
  local_host: z.string().nullable(),
  local_port: Port.nullable(),
  public_port: Port.nullable(),
  enabled: z.boolean(),
  status: z.enum(['active', 'disabled']),
  created_at: Timestamp,
  updated_at: Timestamp,
});
export type MappingView = z.infer<typeof MappingView>;

export const MappingAccepted = z
  .object({ mapping_id: MappingId, public_port: Port.nullable() })
  .describe('Recorded; the read model has not caught up yet (GET Location)');

export function mappingView(row: MappingReadRow): MappingView {
  return {
    mapping_id: row.mapping_id,
    user_id: row.user_id,
    protocol: row.protocol,
    source_client_id: row.source_client_id,
    target_client_id: row.target_client_id,
    target_host: row.target_host,
    target_port: row.target_port,
    local_host: row.local_host,
    local_port: row.local_port,
    public_port: row.public_port,
    enabled: row.enabled,
    status: row.status,
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at),
  };
}
