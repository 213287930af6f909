import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

/** bigint columns are parsed to JS numbers by the pool (see connect.ts); all ids fit in 2^53. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;

export interface EventsTable {
  position: Generated<number>;
  stream: string;
  version: number;
  event_id: string;
  type: string;
  envelope: ColumnType<unknown, string, string>;
  recorded_at: Generated<Date>;
}

export interface ProjectionCheckpointsTable {
  name: string;
  position: number;
  updated_at: Generated<Timestamp>;
}

export interface UsersTable {
  user_id: number;
  username: string;
  email: string;
  status: string;
  version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ClientsTable {
  client_id: number;
  client_type: 'managed' | 'anonymous';
  user_id: number | null;
  client_name: string;
  auth_code_hash: string;
  status: 'online' | 'offline';
  node_id: string | null;
  session_id: string | null;
  last_seen_at: Timestamp | null;
  /**
   * Position of the last event that changed what an edge holds for this client: its pushed config
   * (the mappings it takes part in) or its credentials (enabled, auth code, epoch, deletion).
   */
  config_version: Generated<number>;
  enabled: Generated<boolean>;
  /** Client stream version of the last revocation (disable, auth code rotation, kick, delete); 0 before any. */
  auth_epoch: Generated<number>;
  /** Set when the client was deleted: the row stays for the edges' read-model feed, the API hides it. */
  deleted_at: Timestamp | null;
  version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export type MappingStatus = 'pending' | 'active' | 'error' | 'disabled';
export type AgentSideStatus = 'active' | 'error';

export interface MappingsTable {
  mapping_id: number;
  user_id: number;
  protocol: 'tcp';
  source_client_id: number | null;
  target_client_id: number;
  target_host: string;
  target_port: number;
  local_host: string | null;
  local_port: number | null;
  public_port: number | null;
  /** What the mapping's secret is derived from (shared/platform/mapping-secrets.ts); no secret is stored. */
  secret_generation: number;
  /** Flood limits (MappingCreated); null = never (idle_timeout) or the edge's default. */
  idle_timeout: number | null;
  max_connections: number | null;
  max_pending_opens: number | null;
  enabled: boolean;
  /** Derived from enabled and the two sides' reports (see mappings.projection.ts). */
  status: MappingStatus;
  /** Set when status is 'error': which side failed and why. */
  error: string | null;
  /** null = the source agent has not reported (pending). */
  source_status: AgentSideStatus | null;
  source_error: string | null;
  source_session_id: string | null;
  /** null = the target agent has not reported (pending). */
  target_status: AgentSideStatus | null;
  target_error: string | null;
  target_session_id: string | null;
  version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

/** Entity states waiting to be published on the state stream (services/projector/state-feed.ts). */
export interface StateOutboxTable {
  /** bigserial: read back as a string by pg. */
  id: ColumnType<string, never, never>;
  /** An EntityUpdate (shared/bus/state.ts), JSON. */
  payload: string;
  created_at: Generated<Timestamp>;
}

/** Idempotency-Key records of the Management API (migration 0005). */
export interface ApiIdempotencyTable {
  id: string;
  fingerprint: string;
  state: 'pending' | 'done';
  lease_until: Timestamp;
  secrets: string | null;
  status: number | null;
  headers: string | null;
  body: string | null;
  created_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface ApiKeysTable {
  apikey_id: string;
  name: string;
  status: 'active' | 'revoked';
  /** The actor that made it: `operator:<name>` or `api_key:<id>`. */
  created_by: string;
  created_at: Timestamp;
  revoked_at: Timestamp | null;
  revoke_reason: string | null;
  version: number;
}

export interface Database {
  tnx_events: EventsTable;
  projection_checkpoints: ProjectionCheckpointsTable;
  users: UsersTable;
  clients: ClientsTable;
  mappings: MappingsTable;
  state_outbox: StateOutboxTable;
  api_idempotency: ApiIdempotencyTable;
  api_keys: ApiKeysTable;
}

export type UserRow = Selectable<UsersTable>;
export type ClientRow = Selectable<ClientsTable>;
export type MappingRow = Selectable<MappingsTable>;
export type NewClientRow = Insertable<ClientsTable>;
export type ClientUpdate = Updateable<ClientsTable>;
