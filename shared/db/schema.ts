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
  /** Position of the last event that changed this client's pushed config (mappings it takes part in). */
  config_version: Generated<number>;
  version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

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
  secret_key: string;
  enabled: boolean;
  status: 'active' | 'disabled';
  version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface Database {
  tnx_events: EventsTable;
  projection_checkpoints: ProjectionCheckpointsTable;
  users: UsersTable;
  clients: ClientsTable;
  mappings: MappingsTable;
}

export type UserRow = Selectable<UsersTable>;
export type ClientRow = Selectable<ClientsTable>;
export type MappingRow = Selectable<MappingsTable>;
export type NewClientRow = Insertable<ClientsTable>;
export type ClientUpdate = Updateable<ClientsTable>;
