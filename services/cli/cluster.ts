import { deriveMappingMasterKey, generateMappingMasterKey } from '../../shared/platform/mapping-secrets.js';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { deriveSessionTokenKey, openJetStreamEdgeView, startEdge, type RunningEdge } from '../edge/index.js';
import { EdgeRoutes } from '../edge/routes.js';
import { BridgePool } from '../edge/bridge/index.js';
import { bridgedTargets } from '../edge/remote.js';
import { createNatsBus } from '../../shared/bus/nats.js';
import { claimNodeId, kvNodeDirectory, listNodes, openNodeBucket, type NodeDirectory, type NodeStats } from '../../shared/cluster/node-registry.js';
import { startPresenceSweeper } from '../projector/presence.js';
import { ClientRoutes, DEFAULT_ROUTE_TTL_MS } from '../../shared/cluster/routes.js';
import type { ChangeBus } from '../../shared/contracts/notices.js';
import { createDb, createPool, migrateToLatest, type Db } from '../../shared/db/connect.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { freePort } from '../../shared/net/listen.js';
import type { Lifecycle } from '../../shared/platform/lifecycle.js';
import type { Logger } from '../../shared/platform/logger.js';
import { InfrastructureError, errorMessage } from '../../shared/platform/errors.js';
import type { TunnoxMetrics } from './metrics.js';
import { VERSION } from './version.js';
import { loadOrCreateIdentity, type TlsIdentity } from '../../shared/transport/cert.js';
import { floodOptions, type FloodLimits } from './config.js';

/*
 * The building blocks every process of a cluster is made of: `tunnox server --nats` composes all of
 * them in one process, the role commands (`tunnox api|projector|edge`, roles.ts) one each. Each
 * registers what it opens with the lifecycle right away, so SIGTERM closes in reverse order.
 */

/** Where a JetStream-mode process finds the cluster's event log and subjects. */
export interface ClusterNames {
  streamName: string;
  subjectPrefix: string;
  /** JetStream replicas of the streams and KV buckets this process creates; default 1. */
  streamReplicas?: number;
}

/** A URL fit for a log line or an error message: any password replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

export async function connectNats(url: string, name: string, lifecycle: Lifecycle): Promise<NatsConnection> {
  const nc = await connect({ servers: url, name, maxReconnectAttempts: -1 }).catch((err: unknown) => {
    throw new InfrastructureError(
      'TNX_NATS_UNAVAILABLE',
      `cannot connect to NATS at ${redactUrl(url)}: ${errorMessage(err)}; start nats-server with JetStream (-js) or fix --nats`,
      { cause: err },
    );
  });
  lifecycle.add('nats', () => nc.drain());
  return nc;
}

/** The read-model database, migrated to the latest schema. */
export async function openDatabase(url: string, logger: Logger, lifecycle: Lifecycle): Promise<{ db: Db; pool: ReturnType<typeof createPool> }> {
  const pool = createPool(url, 20, (err) => logger.warn({ err }, 'idle PostgreSQL connection failed'));
  const db = createDb(pool);
  lifecycle.add('database', () => db.destroy());
  await migrateToLatest(db).catch((err: unknown) => {
    throw new InfrastructureError(
      'TNX_DATABASE_UNAVAILABLE',
      `cannot prepare the PostgreSQL database at ${redactUrl(url)}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}; ` +
        'check that it runs and that --database names a database this user may create tables in',
      { cause: err },
    );
  });
  return { db, pool };
}

/** The JetStream event log and the NATS change bus of a cluster. */
export async function openEventLog(
  nc: NatsConnection,
  names: ClusterNames,
  logger: Logger,
  lifecycle: Lifecycle,
  metrics?: TunnoxMetrics,
): Promise<{ store: EventStore; bus: ChangeBus }> {
  const opened = await openJetStreamEventStore({ nc, streamName: names.streamName, subjectPrefix: names.subjectPrefix, logger, replicas: names.streamReplicas ?? 1 });
  const store = metrics ? metrics.instrumentEventStore(opened) : opened;
  lifecycle.add('event-store', () => store.close());
  const bus = createNatsBus(nc, names.subjectPrefix);
  lifecycle.add('change-bus', () => bus.close());
  return { store, bus };
}

export function nodeBucketName(subjectPrefix: string): string {
  return `${subjectPrefix}_nodes`;
}

/** The live nodes, as the Management API lists them. */
export async function openNodeDirectory(nc: NatsConnection, subjectPrefix: string, replicas = 1): Promise<NodeDirectory> {
  return kvNodeDirectory(await openNodeBucket(nc, nodeBucketName(subjectPrefix), DEFAULT_ROUTE_TTL_MS, replicas));
}

/** `host:port`, bracketing an IPv6 host. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

export interface ClusterEdgeConfig extends ClusterNames {
  /** Bind address of the control port and the bridge. */
  controlHost: string;
  controlPort: number;
  /** Bind address of public mapping listeners. */
  publicHost: string;
  bridgePort: number;
  /** What other nodes and agents are told to use; default: the bind address, 127.0.0.1 for a wildcard. */
  advertiseHost: string | undefined;
  /** Without one this edge serves no bridge, and tunnels to agents on other edges are refused. */
  clusterSecret: string | undefined;
  nodeId: string | undefined;
  allowAnonymous: boolean;
  anonymousPerMinutePerIp: number;
  floodLimits: FloodLimits;
  /**
   * Signs and checks agents' session tokens; default: derived from the cluster secret, so every
   * edge accepts every other's tokens (none without a secret).
   */
  sessionTokenKey?: Buffer;
  /**
   * Mapping secrets are derived from it (shared/platform/mapping-secrets.ts); default: derived from
   * the cluster secret, so every edge derives the same secrets (without one: a random key of this
   * process, see startClusterEdge).
   */
  mappingKey?: Buffer;
  /** Set: on shutdown (SIGTERM) the edge drains this long (RunningEdge.drain); unset: it stops at once. */
  drainTimeoutMs?: number;
  /** EdgeOptions.heartbeatIntervalMs / heartbeatTimeoutMs; unset: the edge's defaults. */
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  transport: EdgeTransport;
}

/** How agents reach the edge: its TLS identity, whether plaintext is allowed, the WebSocket port (undefined: none). */
export interface EdgeTransport {
  tls: TlsIdentity;
  allowPlaintext: boolean;
  wsPort: number | undefined;
}

/** The names a generated certificate is for: the advertised and bound hosts (not a wildcard), and loopback. */
export function tlsNames(bindHost: string, advertiseHost: string | undefined): string[] {
  const names = [advertiseHost, isWildcard(bindHost) ? undefined : bindHost, 'localhost', '127.0.0.1', '::1'].filter((n): n is string => !!n);
  return [...new Set(names)];
}

/**
 * The edge's transports from its flags: the certificate from --tls-cert/--tls-key, or the one
 * generated into the data dir on first start (self-signed ECDSA P-256 for `names`, kept and
 * reused). Logs the certificate's fingerprint: what agents pin or see recorded on first use.
 */
export async function loadEdgeTransport(
  c: { tlsCert?: string | undefined; tlsKey?: string | undefined; allowPlaintext: boolean; wsPort: number; dataDir: string },
  names: readonly string[],
  logger: Logger,
): Promise<EdgeTransport> {
  const id = await loadOrCreateIdentity({ certFile: c.tlsCert, keyFile: c.tlsKey, dataDir: c.dataDir, names });
  if (id.generated) logger.info({ cert: id.certPath, fingerprint: id.fingerprint, names }, 'generated a self-signed TLS certificate (kept in the data dir; agents trust it on first use, or pin it with --fingerprint)');
  logger.info({ cert: id.certPath, fingerprint: id.fingerprint }, 'TLS certificate');
  if (c.allowPlaintext) logger.warn('--allow-plaintext: agents may connect without TLS (tcp://, ws://); their auth codes and traffic cross the network unencrypted');
  return { tls: { cert: id.cert, key: id.key, fingerprint: id.fingerprint }, allowPlaintext: c.allowPlaintext, wsPort: c.wsPort === 0 ? undefined : c.wsPort };
}

type EdgeSettingKeys =
  | 'controlPort' | 'bridgePort' | 'advertiseHost' | 'clusterSecret' | 'nodeId' | 'allowAnonymous' | 'anonymousPerMinutePerIp' | 'drainTimeoutMs'
  | 'heartbeatIntervalMs' | 'heartbeatTimeoutMs' | 'transport' | 'floodLimits';

/** The edge settings `tunnox server` and `tunnox edge` share, taken from either's config. */
export function edgeSettings(c: {
  controlPort: number;
  bridgePort: number;
  advertiseHost?: string | undefined;
  clusterSecret?: string | undefined;
  nodeId?: string | undefined;
  allowAnonymous: boolean;
  anonymousPerMinutePerIp: number;
  floodLimits: FloodLimits;
  drainTimeoutMs?: number | undefined;
  heartbeatIntervalMs?: number | undefined;
  heartbeatTimeoutMs?: number | undefined;
}, transport: EdgeTransport): Pick<ClusterEdgeConfig, EdgeSettingKeys> {
  return {
    controlPort: c.controlPort,
    bridgePort: c.bridgePort,
    advertiseHost: c.advertiseHost,
    clusterSecret: c.clusterSecret,
    nodeId: c.nodeId,
    allowAnonymous: c.allowAnonymous,
    anonymousPerMinutePerIp: c.anonymousPerMinutePerIp,
    floodLimits: c.floodLimits,
    ...(c.drainTimeoutMs !== undefined ? { drainTimeoutMs: c.drainTimeoutMs } : {}),
    ...(c.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: c.heartbeatIntervalMs } : {}),
    ...(c.heartbeatTimeoutMs !== undefined ? { heartbeatTimeoutMs: c.heartbeatTimeoutMs } : {}),
    transport,
  };
}

export interface ClusterEdge {
  nodeId: string;
  edge: RunningEdge;
  /** Where agents reach this edge, as registered (advertised host, bound port). */
  controlAddress: string;
  bridgeAddress: string | undefined;
  nodes: NodeDirectory;
  /** The watched client routes this edge writes (open for the process's lifetime). */
  routes: ClientRoutes;
}

/**
 * One edge of a cluster, from NATS alone (no database): the node id won in the registry (with the
 * addresses it advertises), the client routes, the view from the state stream, the bridge and its
 * pool. `beforeEdge` runs once the node id is known and before the edge listens (`tunnox server`
 * starts its projector there).
 */
export async function startClusterEdge(opts: {
  nc: NatsConnection;
  store: EventStore;
  config: ClusterEdgeConfig;
  logger: Logger;
  lifecycle: Lifecycle;
  beforeEdge?: (nodeId: string, log: Logger) => Promise<void>;
  metrics?: TunnoxMetrics;
}): Promise<ClusterEdge> {
  const { nc, store, config, logger, lifecycle } = opts;
  const advertiseHost = config.advertiseHost ?? (isWildcard(config.controlHost) ? '127.0.0.1' : config.controlHost);
  // The registry entry carries both addresses, and it is written before the edge listens (the edge
  // needs its node id): ports given as 0 are chosen now.
  const controlPort = config.controlPort || (await freePort(config.controlHost));
  const bridgePort = config.clusterSecret ? config.bridgePort || (await freePort(config.controlHost)) : undefined;
  const bridgeAddress = bridgePort !== undefined ? hostPort(advertiseHost, bridgePort) : undefined;
  if (!config.clusterSecret) {
    logger.warn('no --cluster-secret (TUNNOX_CLUSTER_SECRET): this edge serves no bridge, so tunnels to agents on other edges are refused');
  }
  const controlAddress = hostPort(advertiseHost, controlPort);
  const startedAt = new Date().toISOString();
  const bucket = nodeBucketName(config.subjectPrefix);
  const replicas = config.streamReplicas ?? 1;
  const nodes = kvNodeDirectory(await openNodeBucket(nc, bucket, DEFAULT_ROUTE_TTL_MS, replicas));
  // Set once the edge runs; the heartbeat reads the counts through it.
  let edgeStats: (() => NodeStats) | undefined;
  let nodeId = config.nodeId;
  if (!nodeId) {
    const registration = await claimNodeId({
      nc,
      bucket,
      // Routes and node entries age out together (shared/cluster/routes.ts).
      ttlMs: DEFAULT_ROUTE_TTL_MS,
      replicas,
      logger,
      info: {
        control_address: controlAddress,
        started_at: startedAt,
        version: VERSION,
        ...(bridgeAddress ? { bridge_address: bridgeAddress } : {}),
        advertise_host: advertiseHost,
      },
      stats: () => edgeStats?.(),
      onLost: () => void lifecycle.close().then(() => process.exit(1)),
    });
    nodeId = registration.nodeId;
    lifecycle.add('node-registration', () => registration.release());
  }
  const routes = await ClientRoutes.open({ nc, bucket: `${config.subjectPrefix}_routes`, ttlMs: DEFAULT_ROUTE_TTL_MS, replicas, logger });
  lifecycle.add('client-routes', () => routes.close());
  const log = logger.child({ nodeId });
  await opts.beforeEdge?.(nodeId, log);

  const opened = await openJetStreamEdgeView({ nc, eventsStream: config.streamName, subjectPrefix: config.subjectPrefix, logger: log, replicas });
  lifecycle.add('edge-view', () => opened.feed.stop());
  const secret = config.clusterSecret;
  const tokenKey = config.sessionTokenKey ?? (secret ? deriveSessionTokenKey(secret) : undefined);
  // An edge without a cluster secret (and no data dir: `tunnox edge`) derives secrets from a key of
  // its own run: they change when it restarts, and its agents get the new ones in their config push
  // (a tunnel is only ever checked by the edge that pushed its agent's config).
  const mappingKey = config.mappingKey ?? (secret ? deriveMappingMasterKey(secret) : generateMappingMasterKey());
  const pool = bridgePort !== undefined && secret ? new BridgePool({ nodeId, secret, log }) : undefined;
  if (pool) lifecycle.add('bridge-pool', () => pool.close());
  if (pool) opts.metrics?.watchBridgePool(pool);
  const edge = await startEdge({
    store,
    view: opened.view,
    logger: log,
    nodeId,
    controlHost: config.controlHost,
    controlPort,
    publicHost: config.publicHost,
    allowAnonymous: config.allowAnonymous,
    anonymousPerMinutePerIp: config.anonymousPerMinutePerIp,
    ...(config.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: config.heartbeatIntervalMs } : {}),
    ...(config.heartbeatTimeoutMs !== undefined ? { heartbeatTimeoutMs: config.heartbeatTimeoutMs } : {}),
    tls: config.transport.tls,
    allowPlaintext: config.transport.allowPlaintext,
    ...(config.transport.wsPort !== undefined ? { wsPort: config.transport.wsPort } : {}),
    ...floodOptions(config.floodLimits),
    ...(tokenKey ? { sessionTokens: { key: tokenKey } } : {}),
    mappingKey,
    routes: new EdgeRoutes({ routes, nodeId, logger: log }),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    ...(pool && secret && bridgePort !== undefined
      ? {
          bridge: {
            secret,
            host: config.controlHost,
            port: bridgePort,
            remote: bridgedTargets({
              nodeId,
              routes,
              bridgeAddressOf: async (peer) => (await nodes.get(peer))?.bridge_address ?? null,
              pool,
              logger: log,
            }),
          },
        }
      : {}),
  });
  const drainMs = config.drainTimeoutMs;
  lifecycle.add('edge', () => (drainMs === undefined ? edge.stop() : edge.drain(drainMs)));
  opts.metrics?.watchEdge(edge);
  edgeStats = () => {
    const s = edge.stats();
    return { connected_agents: s.sessions, active_tunnels: s.tunnels };
  };
  return { nodeId, edge, controlAddress, bridgeAddress, nodes, routes };
}

/**
 * Closes the sessions of edges that died without saying so (services/projector/presence.ts). Runs
 * in every process that runs the projector; only the lowest live id of `leaderBucket` (projector
 * instances, or the nodes of `tunnox server`) sweeps.
 */
export async function startClusterPresenceSweeper(opts: {
  nc: NatsConnection;
  db: Db;
  store: EventStore;
  subjectPrefix: string;
  streamReplicas?: number;
  leaderBucket: string;
  self: string;
  actorId: string;
  logger: Logger;
  lifecycle: Lifecycle;
  intervalMs?: number;
  /** The routes watch of an edge in this process, if there is one (else the sweeper opens its own). */
  routes?: ClientRoutes;
}): Promise<ReturnType<typeof startPresenceSweeper>> {
  const replicas = opts.streamReplicas ?? 1;
  const nodesKv = await openNodeBucket(opts.nc, nodeBucketName(opts.subjectPrefix), DEFAULT_ROUTE_TTL_MS, replicas);
  const leaderKv = opts.leaderBucket === nodeBucketName(opts.subjectPrefix) ? nodesKv : await openNodeBucket(opts.nc, opts.leaderBucket, DEFAULT_ROUTE_TTL_MS, replicas);
  let routes = opts.routes;
  if (!routes) {
    const own = await ClientRoutes.open({ nc: opts.nc, bucket: `${opts.subjectPrefix}_routes`, ttlMs: DEFAULT_ROUTE_TTL_MS, replicas, logger: opts.logger });
    opts.lifecycle.add('presence-routes', () => own.close());
    routes = own;
  }
  const watched = routes;
  const sweeper = startPresenceSweeper({
    db: opts.db,
    store: opts.store,
    logger: opts.logger,
    actorId: opts.actorId,
    ...(opts.intervalMs ? { intervalMs: opts.intervalMs } : {}),
    source: {
      liveNodes: async () => new Set((await listNodes(nodesKv)).map((n) => n.node_id)),
      routedSession: (clientId) => watched.lookup(clientId)?.route.session_id,
      isLeader: async () => (await listNodes(leaderKv))[0]?.node_id === opts.self,
    },
  });
  opts.lifecycle.add('presence-sweeper', () => sweeper.stop());
  return sweeper;
}
