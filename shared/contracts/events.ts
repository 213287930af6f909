import { z } from 'zod';
import type { StoredEvent } from './envelope.js';

/**
 * Domain event payloads. One zod schema per event type and schema version; projections and
 * deciders only ever see parsed payloads. Adding a field is a new schema version.
 */

const Id = z.number().int().positive();
const Port = z.number().int().min(1).max(65535);

export const IdAllocated = z.object({ sequence: z.string().min(1), id: Id });

export const UserCreated = z.object({
  user_id: Id,
  username: z.string().min(1),
  email: z.string().min(3),
  status: z.enum(['active', 'disabled']),
});

/** PATCH /users/{id}: the user's username and email after the change. */
export const UserUpdated = z.object({ user_id: Id, username: z.string().min(1), email: z.string().min(3) });
/** The user is gone for good; its clients and mappings are deleted as cascades, its id never reused. */
export const UserDeleted = z.object({ user_id: Id });

export const ClientRegistered = z.object({
  client_id: Id,
  client_type: z.enum(['managed', 'anonymous']),
  user_id: Id.nullable(),
  client_name: z.string(),
  /** Free-text description from the API (seed `client_desc`); optional, absent in older events. */
  client_desc: z.string().optional(),
  /** scrypt hash of the auth code (`scrypt$N$r$p$salt$hash`), never the code itself. */
  auth_code_hash: z.string().min(1),
});

/**
 * Revocations on the client stream: each of ClientDisabled, ClientAuthCodeRotated, ClientKicked
 * and ClientDeleted invalidates every session token issued before it (the client's auth epoch
 * becomes that event's stream version) and ends the client's live session.
 */
export const ClientDisabled = z.object({ client_id: Id });
export const ClientEnabled = z.object({ client_id: Id });
/** A new auth code replaces the old one; as at registration only its scrypt hash is recorded. */
export const ClientAuthCodeRotated = z.object({ client_id: Id, auth_code_hash: z.string().min(1) });
/** An operator ended the client's session; the agent may log in again with its auth code. */
export const ClientKicked = z.object({ client_id: Id });
/** A new display name (PATCH /clients/{id}); nothing an edge or agent acts on. */
export const ClientRenamed = z.object({ client_id: Id, client_name: z.string().min(1) });
/** The client is gone for good; its id is never reused. */
export const ClientDeleted = z.object({ client_id: Id });
/**
 * An anonymous client nobody used for `ttl_seconds` (`--anonymous-ttl`) is gone for good, like a
 * deleted one: its credentials stop working, its read-model row becomes a tombstone without them,
 * its id is never reused, and nothing more is recorded for it. Issued by the expiry sweeper
 * (services/projector/expiry.ts); its causation is the event that began the inactivity (the last
 * ClientDisconnected, or the ClientRegistered of a client that never connected).
 */
export const ClientExpired = z.object({
  client_id: Id,
  /** When the inactivity began: the time of the causation event (ISO 8601). */
  inactive_since: z.string().datetime({ offset: true }),
  ttl_seconds: z.number().int().positive(),
});

export const ClientConnected = z.object({
  client_id: Id,
  node_id: z.string().min(1),
  session_id: z.string().min(1),
  remote_addr: z.string(),
});

export const ClientDisconnected = z.object({
  client_id: Id,
  node_id: z.string().min(1),
  session_id: z.string().min(1),
  reason: z.string(),
});

/** The ranges of the mapping limits (MappingCreated, the API's body, the domain's shape check). */
export const MAPPING_LIMITS = {
  idle_timeout: { min: 1, max: 604_800 },
  max_connections: { min: 1, max: 1_000_000 },
  max_pending_opens: { min: 1, max: 100_000 },
} as const;
const limit = (k: keyof typeof MAPPING_LIMITS): z.ZodOptional<z.ZodNumber> => z.number().int().min(MAPPING_LIMITS[k].min).max(MAPPING_LIMITS[k].max).optional();

const MappingFields = {
  mapping_id: Id,
  user_id: Id,
  protocol: z.literal('tcp'),
  /** null for a public mapping (visitors arrive at the edge's public_port). */
  source_client_id: Id.nullable(),
  target_client_id: Id,
  target_host: z.string().min(1),
  target_port: Port,
  local_host: z.string().min(1).nullable(),
  local_port: Port.nullable(),
  public_port: Port.nullable(),
  enabled: z.boolean(),
  /**
   * Flood limits, each optional (absent in older events and when not asked for: the edge's
   * default applies; see MAPPING_LIMITS). idle_timeout: seconds without a byte either way after
   * which a tunnel is reset (absent = never). max_connections: concurrent tunnels of the mapping
   * per edge. max_pending_opens: visitors per edge waiting for the target agent's half.
   */
  idle_timeout: limit('idle_timeout'),
  max_connections: limit('max_connections'),
  max_pending_opens: limit('max_pending_opens'),
};

/** A mapping's secret generation: 1 at creation, one more at each rotation. */
export const SecretGeneration = z.number().int().min(1);

/**
 * Schema version 2. No secret: the mapping's secret (the HMAC key half agents prove tunnel opens
 * with) is derived where it is needed, HKDF-SHA256(master key, mapping id, `secret_generation`)
 * (shared/platform/mapping-secrets.ts), and reaches the mapping's two agents in config.sync over
 * their control connection only.
 */
export const MappingCreated = z.object({ ...MappingFields, secret_generation: SecretGeneration });

/**
 * Schema version 1 (before derived secrets): carried the random secret itself in `secret_key`.
 * Still read (upcast to version 2 at generation 1, the secret dropped) so old logs replay; the
 * stored secret is never used again. docs/operations.md describes the one-off rewrite that removes
 * them from a log.
 */
export const MappingCreatedV1 = z.object({ ...MappingFields, secret_key: z.string().min(32) });

export const MappingDeleted = z.object({ mapping_id: Id });
/**
 * The mapping's secret is replaced: `secret_generation` is the next one (the secret itself is
 * derived from it and never recorded). Its agents are pushed the new secret with their next config
 * push, after which the old one opens nothing; tunnels already open go on.
 */
export const MappingSecretRotated = z.object({ mapping_id: Id, secret_generation: SecretGeneration });

/**
 * PATCH /mappings/{id}: the mapping's changeable fields after the change (all of them, so a reader
 * needs only this event). Disabling closes its public listener and resets its running tunnels at
 * every edge; a new target applies to tunnels opened from then on.
 */
export const MappingUpdated = z.object({ mapping_id: Id, enabled: z.boolean(), target_host: z.string().min(1), target_port: Port });

export const PublicPortReserved = z.object({ port: Port, mapping_id: Id });
/**
 * Operator releases (`tunnox ctl ports release`, actor kind operator) carry the operator's `reason`;
 * the API's releases have none. Optional, so older events and older readers agree.
 */
const OperatorReason = z.string().min(1).max(1024).optional();
export const PublicPortReleased = z.object({ port: Port, mapping_id: Id, reason: OperatorReason });

/**
 * Operator commands (`tunnox ctl events skip`). EventSkipped is an operator's audited decision that
 * projections pass the event at `position` (whose envelope id is `event_id`) instead of halting on
 * it; one per position, in stream `skip.<position>` (SKIP_AGGREGATE). The skipped event stays in
 * the log untouched; docs/events.md describes the procedure.
 */
export const EventSkipped = z.object({
  position: z.number().int().positive(),
  event_id: z.string().min(1),
  event_type: z.string().min(1),
  reason: z.string().min(1),
});
export const SKIP_AGGREGATE = 'skip';
export function skipStreamFor(position: number): string {
  return `${SKIP_AGGREGATE}.${position}`;
}
// Agent-reported mapping status and local-port reservations.
/** Longest agent error text recorded; longer reports are cut (see mapping-status.decider.ts). */
export const MAX_AGENT_ERROR_CHARS = 500;

/**
 * Stream `mapping-status.<mapping_id>`: what an agent reported about its side of a mapping, as seen
 * by the edge holding that agent's session. Recorded only when the outcome of a side changes
 * within a session (never once per push or retry). A fact: never rejected, also not when the
 * mapping was deleted meanwhile.
 */
export const MappingAgentStatusReported = z.object({
  mapping_id: Id,
  client_id: Id,
  role: z.enum(['source', 'target']),
  status: z.enum(['active', 'error']),
  /** Present when status is error: the agent's reason, bounded and cleaned by the decider. */
  error: z.string().max(MAX_AGENT_ERROR_CHARS).optional(),
  /** The client config version the agent applied when it reported this. */
  config_version: z.number().int().nonnegative(),
  node_id: z.string().min(1),
  /** The control session that reported it: its end (ClientDisconnected) makes the side pending again. */
  session_id: z.string().min(1),
});

/** Stream `localport.<client_id>_<port>`: which mapping makes that source client listen on that port. */
export const LocalPortReserved = z.object({ client_id: Id, port: Port, mapping_id: Id });
/** `reason`: as on PublicPortReleased, set by an operator's release only. */
export const LocalPortReleased = z.object({ client_id: Id, port: Port, mapping_id: Id, reason: OperatorReason });

/**
 * Stream `account.<user_id>`: what a user may hold (the quota) and what it holds (the ids of its
 * managed clients and mappings). Quota checks are decided here, on one aggregate, so parallel
 * creates cannot overshoot (see shared/domain/account/). Every event carries the whole state, so a
 * command folds only the stream's last event, whatever its history.
 */
const Limit = z.number().int().nonnegative().nullable();
export const QuotaTier = z.enum(['unlimited', 'free', 'pro', 'enterprise', 'custom']);
export const Quota = z.object({
  tier: QuotaTier,
  max_clients: Limit,
  max_mappings: Limit,
  max_active_mappings: Limit,
  max_connections_per_mapping: Limit,
  /** Bytes per second across the user's tunnels; null is no limit. */
  total_bandwidth_limit: Limit,
  /** Bytes per calendar month (UTC); null is no limit. */
  monthly_traffic_limit: Limit,
});
const AccountSnapshot = z.object({
  user_id: Id,
  quota: Quota,
  clients: z.array(Id),
  mappings: z.array(Id),
});
export const AccountQuotaSet = AccountSnapshot;
export const AccountSlotTaken = AccountSnapshot.extend({ kind: z.enum(['client', 'mapping']), id: Id });
export const AccountSlotFreed = AccountSnapshot.extend({ kind: z.enum(['client', 'mapping']), id: Id });

/**
 * Stream `username.<key>` (key: a hash of the lower-cased username): which user holds a username,
 * so usernames are unique regardless of case, decided on one aggregate per name.
 */
export const UsernameClaimed = z.object({ username: z.string().min(1), user_id: Id });
/** The holder renamed or was deleted: the name is free again. */
export const UsernameReleased = z.object({ username: z.string().min(1), user_id: Id });

/**
 * Stream `apikey.<apikey_id>`: an admin API key made by `tunnox ctl apikeys create`. Only the key's
 * SHA-256 digest is recorded (a key is 256 random bits, so a digest cannot be searched back), never
 * the key; `apikey_id` is the key's public part (`tnx_<apikey_id>_<secret>`), the actor id of every
 * event the key issues.
 */
export const API_KEY_ID = /^[0-9a-f]{16}$/;
export const ApiKeyCreated = z.object({
  apikey_id: z.string().regex(API_KEY_ID),
  name: z.string().min(1).max(128),
  /** Hex SHA-256 of the whole key. */
  key_hash: z.string().regex(/^[0-9a-f]{64}$/),
});
/** The key authenticates nothing from now on; `reason` as on operator releases. */
export const ApiKeyRevoked = z.object({ apikey_id: z.string().regex(API_KEY_ID), reason: OperatorReason });

export const EVENT_SCHEMAS = {
  IdAllocated: { version: 1, schema: IdAllocated },
  UserCreated: { version: 1, schema: UserCreated },
  UserUpdated: { version: 1, schema: UserUpdated },
  UserDeleted: { version: 1, schema: UserDeleted },
  ClientRegistered: { version: 1, schema: ClientRegistered },
  ClientDisabled: { version: 1, schema: ClientDisabled },
  ClientEnabled: { version: 1, schema: ClientEnabled },
  ClientAuthCodeRotated: { version: 1, schema: ClientAuthCodeRotated },
  ClientKicked: { version: 1, schema: ClientKicked },
  ClientDeleted: { version: 1, schema: ClientDeleted },
  ClientExpired: { version: 1, schema: ClientExpired },
  ClientRenamed: { version: 1, schema: ClientRenamed },
  ClientConnected: { version: 1, schema: ClientConnected },
  ClientDisconnected: { version: 1, schema: ClientDisconnected },
  MappingCreated: { version: 2, schema: MappingCreated },
  MappingDeleted: { version: 1, schema: MappingDeleted },
  MappingSecretRotated: { version: 1, schema: MappingSecretRotated },
  MappingUpdated: { version: 1, schema: MappingUpdated },
  PublicPortReserved: { version: 1, schema: PublicPortReserved },
  PublicPortReleased: { version: 1, schema: PublicPortReleased },
  EventSkipped: { version: 1, schema: EventSkipped },
  MappingAgentStatusReported: { version: 1, schema: MappingAgentStatusReported },
  LocalPortReserved: { version: 1, schema: LocalPortReserved },
  LocalPortReleased: { version: 1, schema: LocalPortReleased },
  AccountQuotaSet: { version: 1, schema: AccountQuotaSet },
  AccountSlotTaken: { version: 1, schema: AccountSlotTaken },
  AccountSlotFreed: { version: 1, schema: AccountSlotFreed },
  UsernameClaimed: { version: 1, schema: UsernameClaimed },
  UsernameReleased: { version: 1, schema: UsernameReleased },
  ApiKeyCreated: { version: 1, schema: ApiKeyCreated },
  ApiKeyRevoked: { version: 1, schema: ApiKeyRevoked },
} as const;

export type EventType = keyof typeof EVENT_SCHEMAS;
export type EventData<T extends EventType> = z.infer<(typeof EVENT_SCHEMAS)[T]['schema']>;

/** A domain event before it is wrapped in an envelope: what a decider returns. */
export type DomainEvent = { [T in EventType]: { readonly type: T; readonly data: EventData<T> } }[EventType];

/** A stored event whose payload has been validated against its schema. */
export type TypedStoredEvent = { [T in EventType]: StoredEvent<T, EventData<T>> }[EventType];

export function isEventType(type: string): type is EventType {
  return Object.prototype.hasOwnProperty.call(EVENT_SCHEMAS, type);
}

/**
 * Older schema versions this build still reads, each with its upcast to the current version.
 * Writers only ever append the current version (EVENT_SCHEMAS); these exist so logs written by
 * earlier releases replay.
 */
export const LEGACY_EVENT_SCHEMAS: {
  readonly [T in EventType]?: Readonly<Record<number, { readonly schema: z.ZodType; readonly upcast: (data: never) => EventData<T> }>>;
} = {
  MappingCreated: {
    1: {
      schema: MappingCreatedV1,
      upcast: ({ secret_key: _dropped, ...rest }: z.infer<typeof MappingCreatedV1>): EventData<'MappingCreated'> => ({ ...rest, secret_generation: 1 }),
    },
  },
};

/**
 * The one-off rewrite of a stored envelope that holds a mapping secret (a MappingCreated of schema
 * version 1): version 2, `secret_key` dropped, `secret_generation` 1, everything else as stored.
 * Returns null for any other envelope (left exactly as it is). `tunnox ctl events copy` applies it
 * to a JetStream log; migration 0006 runs the same transformation in SQL on the PostgreSQL log.
 */
export function withoutStoredSecret(envelope: Record<string, unknown>): Record<string, unknown> | null {
  if (envelope['type'] !== 'MappingCreated' || envelope['schema_version'] !== 1) return null;
  const data = envelope['data'];
  const { secret_key: _dropped, ...rest } = typeof data === 'object' && data !== null && !Array.isArray(data) ? (data as Record<string, unknown>) : {};
  return { ...envelope, schema_version: EVENT_SCHEMAS.MappingCreated.version, data: { ...rest, secret_generation: 1 } };
}

/** The current-version payload of a legacy envelope's data (LEGACY_EVENT_SCHEMAS), or null if it is not one. */
export function upcastLegacyData(type: string, schemaVersion: unknown, data: unknown): { schema_version: number; data: unknown } | null {
  if (!isEventType(type) || typeof schemaVersion !== 'number') return null;
  const legacy = LEGACY_EVENT_SCHEMAS[type]?.[schemaVersion];
  if (!legacy) return null;
  return { schema_version: EVENT_SCHEMAS[type].version, data: legacy.upcast(legacy.schema.parse(data) as never) };
}

/**
 * Validates a stored event's payload against its schema; throws on unknown type or bad payload.
 * A legacy schema version (LEGACY_EVENT_SCHEMAS) is parsed with its own schema and upcast: the
 * result carries the current schema_version and payload.
 */
export function parseStoredEvent(event: StoredEvent): TypedStoredEvent {
  if (!isEventType(event.type)) {
    throw new Error(`unknown event type ${event.type} at position ${event.position}`);
  }
  const spec = EVENT_SCHEMAS[event.type];
  if (event.schema_version !== spec.version) {
    const up = upcastLegacyData(event.type, event.schema_version, event.data);
    if (!up) throw new Error(`unsupported schema version ${event.schema_version} for ${event.type} at position ${event.position}`);
    return { ...event, schema_version: up.schema_version, data: up.data } as TypedStoredEvent;
  }
  const data = spec.schema.parse(event.data);
  return { ...event, data } as TypedStoredEvent;
}

/** Aggregate types, i.e. the first segment of a stream name. */
export const AGGREGATES = {
  sequence: 'sequence',
  user: 'user',
  client: 'client',
  mapping: 'mapping',
  publicPort: 'port',
  mappingStatus: 'mapping-status',
  localPort: 'localport',
  account: 'account',
  username: 'username',
  apiKey: 'apikey',
} as const;
