import { Writable } from 'node:stream';
import { sql } from 'kysely';
import type { EventEnvelope } from '../../../shared/contracts/envelope.js';
import type { DomainEvent } from '../../../shared/contracts/events.js';
import type { Db } from '../../../shared/db/connect.js';
import { buildEnvelope } from '../../../shared/eventstore/command.js';
import type { EventStore } from '../../../shared/eventstore/types.js';
import { createLogger, type Logger } from '../../../shared/platform/logger.js';
import { rawAppend, type RawLog } from '../../../shared/testkit/raw-append.js';

/** Test helpers for the projector suites: event fixtures, bounded waits, table dumps, log capture. */

export const USER = 100_000_001;
export const CLIENT_A = 600_000_001;
export const CLIENT_B = 600_000_002;
export const ANON = 200_000_001;
export const PRIVATE_MAPPING = 1001;
export const PUBLIC_MAPPING = 1002;
export const PUBLIC_PORT = 20001;
export const SECRET = 'k'.repeat(40);

const T0 = Date.parse('2025-03-01T10:00:00.000Z');
/** A deterministic occurred_at: T0 plus `n` seconds. */
export function at(n: number): Date {
  return new Date(T0 + n * 1000);
}

const META = { actor: { kind: 'system' as const, id: 'projector-test' } };

export async function append(store: EventStore, stream: string, event: DomainEvent, when: Date): Promise<number> {
  const res = await store.append(stream, buildEnvelope(stream, event, META, when), { expectedRevision: 'any' });
  return res.position;
}

/**
 * Writes a MappingDeleted envelope altered by `patch` (an unknown type, a payload that fails its
 * schema, another schema_version) past the append guard, which refuses such events: it stands for
 * one already in the log, written by a buggy or older writer.
 */
export async function appendRaw(log: RawLog, stream: string, patch: Partial<EventEnvelope>, when: Date): Promise<number> {
  const base = buildEnvelope(stream, { type: 'MappingDeleted', data: { mapping_id: 1 } }, META, when);
  return rawAppend(log, stream, { ...base, ...patch });
}

export function mappingCreated(mappingId: number, overrides: Partial<Extract<DomainEvent, { type: 'MappingCreated' }>['data']> = {}): DomainEvent {
  return {
    type: 'MappingCreated',
    data: {
      mapping_id: mappingId,
      user_id: USER,
      protocol: 'tcp',
      source_client_id: CLIENT_A,
      target_client_id: CLIENT_B,
      target_host: '127.0.0.1',
      target_port: 22,
      local_host: '127.0.0.1',
      local_port: 2222,
      public_port: null,
      secret_generation: 1,
      enabled: true,
      ...overrides,
    },
  };
}

export function clientRegistered(clientId: number, type: 'managed' | 'anonymous' = 'managed'): DomainEvent {
  return {
    type: 'ClientRegistered',
    data: {
      client_id: clientId,
      client_type: type,
      user_id: type === 'managed' ? USER : null,
      client_name: `client-${clientId}`,
      auth_code_hash: `scrypt$16384$8$1$salt$${clientId}`,
    },
  };
}

export function connected(clientId: number, sessionId: string, nodeId = 'node-001'): DomainEvent {
  return { type: 'ClientConnected', data: { client_id: clientId, node_id: nodeId, session_id: sessionId, remote_addr: '127.0.0.1:50000' } };
}

export function disconnected(clientId: number, sessionId: string, nodeId = 'node-001'): DomainEvent {
  return { type: 'ClientDisconnected', data: { client_id: clientId, node_id: nodeId, session_id: sessionId, reason: 'closed' } };
}

/** Positions of the scenario's events, by name. */
export interface Scenario {
  userCreated: number;
  idAllocated: number;
  clientA: number;
  clientB: number;
  anon: number;
  connectA: number;
  privateMapping: number;
  portReserved: number;
  publicMapping: number;
  privateDeleted: number;
  disconnectA: number;
  connectB: number;
  last: number;
}

/**
 * A walk through every event type: a user with two managed clients and an anonymous one, a private
 * mapping A→B (later deleted), a public mapping to B, A connecting and leaving, B connecting.
 */
export async function appendScenario(store: EventStore): Promise<Scenario> {
  const s: Partial<Scenario> = {};
  s.idAllocated = await append(store, 'sequence.user', { type: 'IdAllocated', data: { sequence: 'user', id: USER } }, at(0));
  s.userCreated = await append(store, `user.${USER}`, {
    type: 'UserCreated',
    data: { user_id: USER, username: 'alice', email: 'alice@example.test', status: 'active' },
  }, at(1));
  s.clientA = await append(store, `client.${CLIENT_A}`, clientRegistered(CLIENT_A), at(2));
  s.clientB = await append(store, `client.${CLIENT_B}`, clientRegistered(CLIENT_B), at(3));
  s.anon = await append(store, `client.${ANON}`, clientRegistered(ANON, 'anonymous'), at(4));
  s.connectA = await append(store, `client-session.${CLIENT_A}`, connected(CLIENT_A, 'sess-a1'), at(5));
  s.privateMapping = await append(store, `mapping.${PRIVATE_MAPPING}`, mappingCreated(PRIVATE_MAPPING), at(6));
  s.portReserved = await append(store, `port.${PUBLIC_PORT}`, {
    type: 'PublicPortReserved',
    data: { port: PUBLIC_PORT, mapping_id: PUBLIC_MAPPING },
  }, at(7));
  s.publicMapping = await append(store, `mapping.${PUBLIC_MAPPING}`, mappingCreated(PUBLIC_MAPPING, {
    source_client_id: null,
    local_host: null,
    local_port: null,
    public_port: PUBLIC_PORT,
    target_port: 8080,
    enabled: false,
  }), at(8));
  s.privateDeleted = await append(store, `mapping.${PRIVATE_MAPPING}`, { type: 'MappingDeleted', data: { mapping_id: PRIVATE_MAPPING } }, at(9));
  s.disconnectA = await append(store, `client-session.${CLIENT_A}`, disconnected(CLIENT_A, 'sess-a1'), at(10));
  s.connectB = await append(store, `client-session.${CLIENT_B}`, connected(CLIENT_B, 'sess-b1', 'node-002'), at(11));
  s.last = s.connectB;
  return s as Scenario;
}

/** Bounded wait (not a timing assertion): polls `check` until true or gives up after `timeoutMs`. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 15_000, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000; i++) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return false;
}

export async function checkpointOf(db: Db, name: string): Promise<number | null> {
  const row = await db.selectFrom('projection_checkpoints').select('position').where('name', '=', name).executeTakeFirst();
  return row?.position ?? null;
}

export async function untilCheckpoint(db: Db, name: string, position: number): Promise<boolean> {
  return eventually(async () => ((await checkpointOf(db, name)) ?? 0) >= position);
}

/** Full read-model dump as PostgreSQL renders it (row_to_json text), for byte-exact comparison. */
export async function dumpReadModels(db: Db): Promise<string> {
  const parts: string[] = [];
  for (const [table, key] of [['users', 'user_id'], ['clients', 'client_id'], ['mappings', 'mapping_id']] as const) {
    const res = await sql<{ row: string }>`select row_to_json(t)::text as row from ${sql.table(table)} t order by ${sql.ref(key)}`.execute(db);
    parts.push(`${table}:\n${res.rows.map((r) => r.row).join('\n')}`);
  }
  return parts.join('\n');
}

export interface CapturedLogs {
  logger: Logger;
  lines: () => { level: number; msg: string; [k: string]: unknown }[];
}

/** A real pino logger writing JSON lines into memory. */
export function captureLogs(): CapturedLogs {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'));
      cb();
    },
  });
  const logger = createLogger({ level: 'debug', name: 'projector-test' }, dest);
  return {
    logger,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as { level: number; msg: string }),
  };
}

/**
 * pg.Pool emits 'error' when an idle client's backend dies, and an unhandled 'error' event crashes
 * the process. TestDatabase.drop() uses DROP DATABASE ... WITH (FORCE), which can terminate
 * backends of clients the pool is still closing, so the owning test absorbs those here.
 */
export function absorbIdleClientErrors(pool: { on(event: 'error', fn: (err: Error) => void): unknown }): void {
  pool.on('error', () => undefined);
}
