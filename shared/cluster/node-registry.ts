import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { nodeIdFor } from '../contracts/ids.js';
import type { Logger } from '../platform/logger.js';
import { InfrastructureError, errorMessage } from '../platform/errors.js';

export interface NodeInfo {
  node_id: string;
  control_address: string;
  started_at: string;
  version: string;
}

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
  info: Omit<NodeInfo, 'node_id'>;
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
function isRevisionConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 10071 || code === 10164 || /wrong last sequence/i.test(errorMessage(err));
}

export async function openNodeBucket(nc: NatsConnection, bucket: string, ttlMs: number): Promise<KV> {
  return new Kvm(nc).create(bucket, { ttl: ttlMs, history: 1 });
}

/**
 * Wins a free node id (`node-001` … `node-1000`) by racing create-if-absent in the node bucket,
 * then refreshes it every ttl/3 with a revision-checked update, so a node that dies disappears
 * within the TTL and two live nodes can never hold the same id.
 */
export async function claimNodeId(opts: ClaimNodeIdOptions): Promise<NodeRegistration> {
  const kv = await openNodeBucket(opts.nc, opts.bucket, opts.ttlMs);
  const maxNodes = opts.maxNodes ?? 1000;
  for (let n = 1; n <= maxNodes; n++) {
    const nodeId = nodeIdFor(n);
    const info: NodeInfo = { node_id: nodeId, ...opts.info };
    let revision: number;
    try {
      revision = await kv.create(nodeId, JSON.stringify(info));
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
      void kv.update(nodeId, JSON.stringify(info), revision).then(
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

/** Live nodes in the registry. */
export async function listNodes(kv: KV): Promise<NodeInfo[]> {
  const out: NodeInfo[] = [];
  const keys = await kv.keys();
  for await (const key of keys) {
    const e = await kv.get(key);
    if (e && e.operation === 'PUT') out.push(JSON.parse(e.string()) as NodeInfo);
  }
  return out.sort((a, b) => a.node_id.localeCompare(b.node_id));
}
