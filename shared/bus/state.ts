import {
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { z } from 'zod';

/**
 * The config-update stream: the projector's latest state of every client and mapping an edge needs,
 * one subject per entity, `<prefix>.state.client.<id>` and `<prefix>.state.mapping.<id>`.
 *
 * Not under `<prefix>.cfg.`: the change notices (core NATS, shared/bus/nats.ts) already use
 * `<prefix>.cfg.client.<id>`, and a JetStream stream captures every core publish on its subjects,
 * so notices would land in the stream. Not under `<prefix>.evt.` either (the event log).
 */
export function stateSubject(prefix: string, kind: 'client' | 'mapping', id: number): string {
  return `${prefix}.state.${kind}.${id}`;
}

/** The one filter an edge consumes (NATS 2.9: one filter subject per consumer). */
export function stateFilter(prefix: string): string {
  return `${prefix}.state.>`;
}

/** `<events stream>_CFG`, next to the event log it is derived from. */
export function stateStreamName(eventsStream: string): string {
  return `${eventsStream}_CFG`;
}

const Id = z.number().int().positive();
const Version = z.number().int().nonnegative();
const Port = z.number().int().min(1).max(65535);

/**
 * What an edge knows of a client. `epoch`: the client's auth epoch (the read models' auth_epoch),
 * which changes exactly when its session tokens are revoked (disabled, auth code rotated, kicked,
 * deleted); a token carrying another epoch is refused.
 */
export const ClientStateSchema = z.object({
  client_id: Id,
  client_type: z.enum(['managed', 'anonymous']),
  auth_code_hash: z.string().min(1),
  /** The position of the latest change to the client's set of mappings (its pushed config's version). */
  config_version: Version,
  enabled: z.boolean(),
  epoch: z.number().int().nonnegative(),
});
export type ClientState = z.infer<typeof ClientStateSchema>;

/** The mapping fields an edge uses (authorizing tunnels, public listeners, agent configs). */
export const MappingStateSchema = z.object({
  mapping_id: Id,
  protocol: z.literal('tcp'),
  source_client_id: Id.nullable(),
  target_client_id: Id,
  target_host: z.string().min(1),
  target_port: Port,
  local_host: z.string().nullable(),
  local_port: Port.nullable(),
  public_port: Port.nullable(),
  /**
   * The generation the edge derives the mapping's secret from (shared/platform/mapping-secrets.ts);
   * never the secret. Absent in messages from before derived secrets (they carried `secret_key`,
   * which is stripped on parse): generation 1, as their upcast MappingCreated.
   */
  secret_generation: z.number().int().min(1).default(1),
  enabled: z.boolean(),
  /** Flood limits (MappingCreated): null or absent (a state published before them) = never / the edge's default. */
  idle_timeout: z.number().int().positive().nullable().optional(),
  max_connections: z.number().int().positive().nullable().optional(),
  max_pending_opens: z.number().int().positive().nullable().optional(),
});
export type MappingState = z.infer<typeof MappingStateSchema>;

/**
 * One message on the stream: an entity's full state as of projector position `version`, or
 * `state: null` (a tombstone: the entity is gone). Receivers keep the highest version per entity
 * and ignore anything older or equal, so duplicates and reordering are harmless.
 */
export const EntityUpdateSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('client'), id: Id, version: Version, state: ClientStateSchema.nullable() }),
  z.object({ kind: z.literal('mapping'), id: Id, version: Version, state: MappingStateSchema.nullable() }),
]);
export type EntityUpdate = z.infer<typeof EntityUpdateSchema>;

/** The read-model columns behind ClientState / MappingState (projector and standalone feed). */
export const CLIENT_STATE_COLUMNS = ['client_id', 'client_type', 'auth_code_hash', 'config_version', 'enabled', 'auth_epoch', 'deleted_at'] as const;
export const MAPPING_STATE_COLUMNS = [
  'mapping_id',
  'protocol',
  'source_client_id',
  'target_client_id',
  'target_host',
  'target_port',
  'local_host',
  'local_port',
  'public_port',
  'secret_generation',
  'enabled',
  'idle_timeout',
  'max_connections',
  'max_pending_opens',
] as const;

/** A clients row (CLIENT_STATE_COLUMNS) as the view holds it: null (a tombstone) once deleted. */
export function clientStateOf(row: {
  client_id: number;
  client_type: ClientState['client_type'];
  auth_code_hash: string;
  config_version: number;
  enabled: boolean;
  auth_epoch: number;
  deleted_at: unknown;
}): ClientState | null {
  if (row.deleted_at !== null) return null;
  return {
    client_id: row.client_id,
    client_type: row.client_type,
    auth_code_hash: row.auth_code_hash,
    config_version: row.config_version,
    enabled: row.enabled,
    epoch: row.auth_epoch,
  };
}

/** Dedup id for a publish: the same entity at the same version is the same message. */
export function updateMsgId(u: Pick<EntityUpdate, 'kind' | 'id' | 'version'>): string {
  return `${u.kind}.${u.id}.${u.version}`;
}

/**
 * Creates the state stream if missing: only the last message per subject is kept (the current
 * state), tombstones included so a late stale update cannot resurrect a deleted entity.
 */
export async function ensureStateStream(jsm: JetStreamManager, name: string, prefix: string, duplicateWindowMs = 120_000, replicas = 1): Promise<void> {
  const subject = stateFilter(prefix);
  const existing = await jsm.streams.info(name).catch((err: unknown) => {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return null;
    throw err;
  });
  if (existing) {
    if (existing.config.subjects?.length !== 1 || existing.config.subjects[0] !== subject || existing.config.max_msgs_per_subject !== 1) {
      throw new Error(`JetStream stream ${name} must have subjects ["${subject}"] and max_msgs_per_subject 1`);
    }
    return;
  }
  await jsm.streams
    .add({
      name,
      subjects: [subject],
      num_replicas: replicas,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      max_msgs_per_subject: 1,
      duplicate_window: nanos(duplicateWindowMs),
    })
    .catch(async (err: unknown) => {
      // Another process may have created it first.
      if (!(await jsm.streams.info(name).catch(() => null))) throw err;
    });
}

export interface StatePublisher {
  /** Publishes unless the stream already holds this entity at `version` or newer. Resolves with what happened. */
  publish(update: EntityUpdate): Promise<'published' | 'stale'>;
  /** Messages the stream holds now. */
  messages(): Promise<number>;
}

/**
 * Publishes entity states so the stream's last message per subject is always the newest version:
 * two projector instances (or a restarted one re-publishing) may publish out of order, so each
 * publish reads the subject's last message and carries its sequence as `expect.lastSubjectSequence`;
 * an older-or-equal version is dropped, a race is retried. The Nats-Msg-Id (entity + version) makes
 * a retried publish after a lost ack a no-op.
 */
export async function createStatePublisher(opts: { nc: NatsConnection; stream: string; prefix: string; replicas?: number }): Promise<StatePublisher> {
  const jsm = await jetstreamManager(opts.nc);
  const js = jetstream(opts.nc);
  await ensureStateStream(jsm, opts.stream, opts.prefix, undefined, opts.replicas);
  return {
    async messages() {
      return (await jsm.streams.info(opts.stream)).state.messages;
    },
    async publish(update) {
      const subject = stateSubject(opts.prefix, update.kind, update.id);
      const payload = JSON.stringify(update);
      for (let attempt = 0; ; attempt++) {
        const last = await jsm.streams.getMessage(opts.stream, { last_by_subj: subject });
        if (last) {
          const held = EntityUpdateSchema.safeParse(last.json());
          if (held.success && held.data.version >= update.version) return 'stale';
        }
        try {
          await js.publish(subject, payload, { msgID: updateMsgId(update), expect: { lastSubjectSequence: last?.seq ?? 0 } });
          return 'published';
        } catch (err) {
          const raced =
            err instanceof JetStreamApiError &&
            (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
          if (!raced || attempt >= 20) throw err;
        }
      }
    },
  };
}
