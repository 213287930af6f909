import { z } from 'zod';
import { MAPPING_LIMITS } from '../../../../shared/contracts/events.js';
import { ClientId, Host, MappingId, Port, Timestamp, UserId, iso } from '../../schemas.js';
import type { MappingReadRow } from './queries.js';

/**
 * One body for both tcp kinds, told apart by source_client_id:
 * - client-to-client: source_client_id + local_port (+ local_host);
 * - public: no source_client_id; public_port optional (allocated from the configured range).
 * A single strict object (rather than a union) lets every error name its field.
 *
 * This schema checks each field on its own (type, range, unknown keys: 400 TNX_VALIDATION_FAILED).
 * Rules between fields (which kind needs or forbids which field, source != target) have one home,
 * validateMappingShape in the domain, and answer 422 TNX_MAPPING_INVALID naming the field: the
 * request is well-formed, the mapping it describes is not.
 */
export const CreateMappingBody = z.strictObject({
  user_id: UserId,
  source_client_id: ClientId.optional().describe('Client-to-client: the agent that listens on local_port'),
  target_client_id: ClientId.describe('The agent that dials target_host:target_port; must differ from source_client_id'),
  protocol: z.literal('tcp').describe('Only tcp for now'),
  target_host: Host,
  target_port: Port,
  local_port: Port.optional().describe('Client-to-client only, and required there; unique per source client (409 TNX_LOCAL_PORT_TAKEN)'),
  local_host: Host.optional().describe('Client-to-client only; default 127.0.0.1 on the agent'),
  public_port: Port.optional().describe('Public only; omitted = first free port of the range'),
  idle_timeout: limit('idle_timeout')
    .optional()
    .describe('Seconds without a byte in either direction after which a tunnel is reset (RST on both ends); omitted = never'),
  max_connections: limit('max_connections')
    .optional()
    .describe('Concurrent tunnels of this mapping per edge; more visitors are refused at once; omitted = the edge default (--max-connections-per-mapping)'),
  max_pending_opens: limit('max_pending_opens')
    .optional()
    .describe("Visitors per edge waiting for the target agent's half; more are refused at once; omitted = the edge default (--max-pending-opens-per-mapping)"),
});

/** PATCH /mappings/{id}: the fields a mapping may change; at least one. */
export const PatchMappingBody = z
  .strictObject({
    enabled: z.boolean().optional().describe('false: the public listener closes and running tunnels are reset at every edge; true: back in service'),
    target_host: Host.optional().describe('applies to tunnels opened from now on'),
    target_port: Port.optional().describe('applies to tunnels opened from now on'),
  })
  .refine((b) => b.enabled !== undefined || b.target_host !== undefined || b.target_port !== undefined, {
    message: 'name at least one of enabled, target_host, target_port',
  });
function limit(field: keyof typeof MAPPING_LIMITS): z.ZodNumber {
  return z.number().int().min(MAPPING_LIMITS[field].min).max(MAPPING_LIMITS[field].max);
}

/**
 * `pending` until every agent side the mapping needs has reported it running (the source agent's
 * listener when there is a local_port, and the target agent), then `active`; `error` as soon as
 * one side reported a failure (`error` says which side and why); `disabled` when not enabled.
 * A side whose agent is not connected stays `pending`.
 */
export const MappingStatus = z.enum(['pending', 'active', 'error', 'disabled']);

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
  idle_timeout: z.number().int().nullable().describe('Seconds; null = never'),
  max_connections: z.number().int().nullable().describe('null = the edge default'),
  max_pending_opens: z.number().int().nullable().describe('null = the edge default'),
  enabled: z.boolean(),
  status: MappingStatus,
  error: z.string().optional().describe('Present when status is error: the agent-side reason, e.g. "source: local port 13306 in use"'),
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
    idle_timeout: row.idle_timeout,
    max_connections: row.max_connections,
    max_pending_opens: row.max_pending_opens,
    enabled: row.enabled,
    status: row.status,
    ...(row.status === 'error' && row.error !== null ? { error: row.error } : {}),
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at),
  };
}
