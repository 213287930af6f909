import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { z } from 'zod';
import { nodeIdFor } from '../contracts/ids.js';
import type { Logger } from '../platform/logger.js';
import { InfrastructureError, errorMessage } from '../platform/errors.js';

/**
 * A node's registry entry, as `GET /api/v1/nodes` shows it. The counts are refreshed with every
 * heartbeat, so they are at most one heartbeat interval (ttl/3) old.
 */
export const NodeInfoSchema = z.object({
  node_id: z.string(),
  /** Where agents connect (host:port). */
  control_address: z.string(),
  /** Where other edges open bridge streams (host:port); null when the node serves no bridge. */
  bridge_address: z.string().nullable().default(null),
  /** The host other nodes and agents are told to use; null when not configured. */
  advertise_host: z.string().nullable().default(null),
  started_at: z.string(),
  version: z.string(),
  /** Agents with a live control session on this node. */
  connected_agents: z.number().int().min(0).default(0),
  /** Tunnels being piped by this node. */
  active_tunnels: z.number().int().min(0).default(0),
  /** When the entry was last written (the latest heartbeat). */
  heartbeat_at: z.string().nullable().default(null),
});
export type NodeInfo = z.infer<typeof NodeInfoSchema>;

/** What a node reports about itself at each heartbeat. */
export interface NodeStats {
  connected_agents: number;
  active_tunnels: number;
}

/** The static part of an entry, given at claim time. */
export type NodeStaticInfo = Pick<NodeInfo, 'control_address' | 'started_at' | 'version'> &
  Partial<Pick<NodeInfo, 'bridge_address' | 'advertise_host'>>;

export interface NodeRegistration {
  readonly nodeId: string;
  /** Stops heartbeating and removes the entry so the name is free at once. */
  release(): Promise<void>;
}

export interface ClaimNodeIdOptions {
  nc: NatsConnection;
  /** KV bucket name; one per cluster. */
  bucket: string;
  /** Bucket-level TTL (NATS 2.9 has no per-key TTL): an entry not refreshed within it disappears. */
  ttlMs: number;
  /** JetStream replicas if the bucket is created here. Default 1. */
  replicas?: number;
  info: NodeStaticInfo;
  /**
   * Read at every heartbeat; undefined (or throwing) keeps the previous counts. A function because
   * the edge that has the counts starts only after its node id is won.
   */
  stats?: () => NodeStats | undefined;
  logger: Logger;
  maxNodes?: number;
  /** Called if the registration is lost (the entry expired and someone else took the name). */
  onLost?: (err: Error) => void;
}

/**
 * True when a write was refused because the key's revision was not the one we expected: the id is
 * held by someone else (create-if-absent lost the race, or an update found a newer entry).
 * 10071 is JetStream's "wrong last sequence", 10164 its variant for an unknown last sequence.
 */
export function isRevisionConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 10071 || code === 10164 || /wrong last sequence/i.test(errorMessage(err));
}

/** `replicas`: JetStream replicas if the bucket is created here (an existing one keeps its own). */
export async function openNodeBucket(nc: NatsConnection, bucket: string, ttlMs: number, replicas = 1): Promise<KV> {
  return new Kvm(nc).create(bucket, { ttl: ttlMs, history: 1, replicas });
}

/**
 * Wins a free node id (`node-001` … `node-1000`) by racing create-if-absent in the node bucket,
 * then refreshes it every ttl/3 with a revision-checked update, so a node that dies disappears
 * within the TTL and two live nodes can never hold the same id.
 */
export async function claimNodeId(opts: ClaimNodeIdOptions): Promise<NodeRegistration> {
  const kv = await openNodeBucket(opts.nc, opts.bucket, opts.ttlMs, opts.replicas);
  const maxNodes = opts.maxNodes ?? 1000;
  for (let n = 1; n <= maxNodes; n++) {
    const nodeId = nodeIdFor(n);
    let stats: NodeStats = { connected_agents: 0, active_tunnels: 0 };
    const entry = (): string => {
      try {
        stats = opts.stats?.() ?? stats;
      } catch (err) {
        opts.logger.warn({ err, nodeId }, 'node stats unavailable; keeping the previous counts');
      }
      const info: NodeInfo = {
        node_id: nodeId,
        control_address: opts.info.control_address,
        bridge_address: opts.info.bridge_address ?? null,
        advertise_host: opts.info.advertise_host ?? null,
        started_at: opts.info.started_at,
        version: opts.info.version,
        connected_agents: stats.connected_agents,
        active_tunnels: stats.active_tunnels,
        heartbeat_at: new Date().toISOString(),
      };
      return JSON.stringify(info);
    };
    let revision: number;
    try {
      revision = await kv.create(nodeId, entry());
    } catch (err) {
      if (isRevisionConflict(err)) continue; // held by a live node
      // Anything else (a refused write, a timeout, a closed connection) would fail for the next id
      // too: say what really happened instead of claiming every id is taken.
      throw new InfrastructureError(
        'TNX_CLUSTER_NODE_REGISTRY_FAILED',
        `could not claim ${nodeId} in the NATS KV bucket ${opts.bucket}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    opts.logger.info({ nodeId }, 'node id claimed');
    let stopped = false;
    let refreshedAt = Date.now();
    const timer = setInterval(() => {
      void kv.update(nodeId, entry(), revision).then(
        (rev) => {
          revision = rev;
          refreshedAt = Date.now();
        },
        (err: unknown) => {
          if (stopped) return;
          // A wrong last sequence means the entry changed under us (expired and re-claimed, or
          // purged): the id is gone. Anything else (a NATS reconnect, a timeout) is retried on the
          // next tick for as long as the entry can still be alive.
          const conflict = isRevisionConflict(err);
          if (!conflict && Date.now() - refreshedAt < opts.ttlMs) {
            opts.logger.warn({ err, nodeId }, 'node heartbeat failed; retrying');
            return;
          }
          stopped = true;
          clearInterval(timer);
          const lost = new InfrastructureError('TNX_CLUSTER_NODE_ID_LOST', `lost node id ${nodeId}: ${errorMessage(err)}`, { cause: err });
          opts.logger.error({ err: lost, nodeId }, 'node registration lost');
          opts.onLost?.(lost);
        },
      );
    }, Math.max(100, Math.floor(opts.ttlMs / 3)));
    timer.unref();
    return {
      nodeId,
      async release() {
        if (stopped) return;
        stopped = true;
        clearInterval(timer);
        await kv.delete(nodeId, { previousSeq: revision }).catch(() => undefined);
      },
    };
  }
  throw new InfrastructureError('TNX_CLUSTER_NO_FREE_NODE_ID', `all ${maxNodes} node ids are taken`);
}

/**
 * Reads a stored entry; entries written by an older version lack the newer fields and get their
 * defaults. Undefined for a deleted or unreadable entry.
 */
export function parseNodeEntry(e: KvEntry): NodeInfo | undefined {
  if (e.operation !== 'PUT') return undefined;
  try {
    const parsed = NodeInfoSchema.safeParse(e.json());
    return parsed.success && parsed.data.node_id === e.key ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Live nodes in the registry, by node id. */
export async function listNodes(kv: KV): Promise<NodeInfo[]> {
  const out: NodeInfo[] = [];
  // keys() reads the bucket through a consumer that also delivers writes made while it runs: a
  // heartbeat during the listing names its key a second time.
  const seen = new Set<string>();
  const keys = await kv.keys();
  for await (const key of keys) {
    if (seen.has(key)) continue;
    seen.add(key);
    const e = await kv.get(key);
    const info = e ? parseNodeEntry(e) : undefined;
    if (info) out.push(info);
  }
  return out.sort((a, b) => a.node_id.localeCompare(b.node_id, 'en', { numeric: true }));
}

/** One node's entry; undefined when it is not (or no longer) registered. */
export async function getNode(kv: KV, nodeId: string): Promise<NodeInfo | undefined> {
  const e = await kv.get(nodeId);
  return e ? parseNodeEntry(e) : undefined;
}

/** Where the Management API reads the live nodes from (see services/api/deps.ts). */
export interface NodeDirectory {
  list(): Promise<NodeInfo[]>;
  get(nodeId: string): Promise<NodeInfo | undefined>;
}

/** Cluster mode: the node registry bucket. Errors become InfrastructureError (503 in the API). */
export function kvNodeDirectory(kv: KV): NodeDirectory {
  const wrap = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw new InfrastructureError('TNX_CLUSTER_NODE_REGISTRY_FAILED', `could not ${what} the node registry: ${errorMessage(err)}`, { cause: err });
    }
  };
  return {
    list: () => wrap('list', () => listNodes(kv)),
    get: (nodeId) => wrap('read', () => getNode(kv, nodeId)),
  };
}

/** Standalone mode: the one local node, its counts read from the running edge when asked. */
export function localNodeDirectory(nodeId: string, info: NodeStaticInfo, stats: () => NodeStats): NodeDirectory {
  const current = (): NodeInfo => ({
    node_id: nodeId,
    control_address: info.control_address,
    bridge_address: info.bridge_address ?? null,
    advertise_host: info.advertise_host ?? null,
    started_at: info.started_at,
    version: info.version,
    ...stats(),
    heartbeat_at: new Date().toISOString(),
  });
  return {
    list: async () => [current()],
    get: async (id) => (id === nodeId ? current() : undefined),
  };
}
