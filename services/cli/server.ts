import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { buildApp } from '../api/index.js';
import { MemoryEdgeView, closeStaleSessions, openJetStreamEdgeView, startEdge, startReadModelViewFeed, type EdgeView } from '../edge/index.js';
import { createProjectionWaiter, startProjector } from '../projector/index.js';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { createNatsBus } from '../../shared/bus/nats.js';
import { createStatePublisher, stateStreamName, type StatePublisher } from '../../shared/bus/state.js';
import { claimNodeId, kvNodeDirectory, localNodeDirectory, openNodeBucket, type NodeDirectory, type NodeStats } from '../../shared/cluster/node-registry.js';
import { ClientRoutes, DEFAULT_ROUTE_TTL_MS } from '../../shared/cluster/routes.js';
import { EdgeRoutes } from '../edge/routes.js';
import { BridgePool } from '../edge/bridge/index.js';
import { bridgedTargets } from '../edge/remote.js';
import { freePort } from '../../shared/net/listen.js';
import type { ChangeBus } from '../../shared/contracts/notices.js';
import { createDb, createPool, migrateToLatest } from '../../shared/db/connect.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Lifecycle } from '../../shared/platform/lifecycle.js';
import type { Logger } from '../../shared/platform/logger.js';
import { InfrastructureError, errorMessage } from '../../shared/platform/errors.js';
import { randomToken } from '../../shared/platform/secrets.js';
import type { ServerConfig } from './config.js';
import { startEmbeddedPostgres } from './embedded-postgres.js';
import { VERSION } from './version.js';

export interface RunningServer {
  mode: 'standalone' | 'jetstream';
  apiUrl: string;
  controlAddress: string;
  apiKey: string;
  apiKeySource: 'flag' | 'generated' | 'data-dir';
  /** Where a generated key is kept (absolute). */
  apiKeyFile: string;
  nodeId: string;
  database: 'embedded' | 'external';
}

export function apiKeyFile(dataDir: string): string {
  return join(resolve(dataDir), 'admin-api-key');
}

/** The admin API key: given explicitly, or generated on first start and kept (0600) in the data dir. */
async function resolveApiKey(config: ServerConfig): Promise<{ key: string; source: RunningServer['apiKeySource'] }> {
  if (config.apiKey) return { key: config.apiKey, source: 'flag' };
  const file = apiKeyFile(config.dataDir);
  if (existsSync(file)) return { key: (await readFile(file, 'utf8')).trim(), source: 'data-dir' };
  const key = randomToken('tnxk_', 32);
  await writeFile(file, key + '\n', { mode: 0o600 });
  return { key, source: 'generated' };
}

/**
 * Composes edge + Management API + projector in one process. Standalone mode (no --nats): the
 * event log is the PostgreSQL event store and change notices stay in-process. JetStream mode: the
 * event log is a JetStream stream, notices travel on NATS subjects and the node id is won in the
 * NATS KV node registry. Every resource is registered with the lifecycle right after it opens, so
 * SIGTERM closes them in reverse order (API, edge, projector, bus, event log, NATS, database).
 */
export async function runServer(config: ServerConfig, logger: Logger, lifecycle: Lifecycle): Promise<RunningServer> {
  // Parents get the usual 0755 (mkdir -p); only the data dir itself is private.
  await mkdir(dirname(resolve(config.dataDir)), { recursive: true });
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const { key: apiKey, source: apiKeySource } = await resolveApiKey(config);

  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    const embedded = await startEmbeddedPostgres(config.dataDir, logger);
    lifecycle.add('embedded-postgres', () => embedded.stop());
    databaseUrl = embedded.url;
  }
  const pool = createPool(databaseUrl, 20, (err) => logger.warn({ err }, "idle PostgreSQL connection failed"));
  const db = createDb(pool);
  lifecycle.add('database', () => db.destroy());
  await migrateToLatest(db).catch((err: unknown) => {
    throw new InfrastructureError(
      'TNX_DATABASE_UNAVAILABLE',
      `cannot prepare the PostgreSQL database at ${redactUrl(databaseUrl)}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}; ` +
        'check that it runs and that --database names a database this user may create tables in',
      { cause: err },
    );
  });

  let store: EventStore;
  let bus: ChangeBus;
  let statePublisher: StatePublisher | undefined;
  let nc: Awaited<ReturnType<typeof connect>> | undefined;
  let nodeId = config.nodeId ?? 'node-001';
  const controlAddressHint = `${config.controlHost}:${config.controlPort}`;
  const startedAt = new Date().toISOString();
  // Set once the edge runs; the node heartbeat and the nodes API read the counts through it.
  let edgeStats: (() => NodeStats) | undefined;
  let nodes: NodeDirectory | undefined;
  let clientRoutes: ClientRoutes | undefined;
  // The bridge (JetStream mode with a cluster secret): its address goes into the node registry
  // entry, so a free port is chosen before the node id is claimed.
  const bridgeHost = config.controlHost;
  const advertiseHost = config.advertiseHost ?? (config.controlHost === '0.0.0.0' || config.controlHost === '::' ? '127.0.0.1' : config.controlHost);
  const bridgePort = config.natsUrl && config.clusterSecret ? config.bridgePort || (await freePort(bridgeHost)) : undefined;
  const bridgeAddress = bridgePort !== undefined ? `${advertiseHost.includes(':') ? `[${advertiseHost}]` : advertiseHost}:${bridgePort}` : undefined;
  if (config.natsUrl && !config.clusterSecret) {
    logger.warn('no --cluster-secret (TUNNOX_CLUSTER_SECRET): this server serves no bridge, so tunnels to agents on other servers are refused');
  }
  if (config.natsUrl) {
    const natsUrl = config.natsUrl;
    const conn = await connect({ servers: natsUrl, name: 'tunnox-server', maxReconnectAttempts: -1 }).catch((err: unknown) => {
      throw new InfrastructureError(
        'TNX_NATS_UNAVAILABLE',
        `cannot connect to NATS at ${redactUrl(natsUrl)}: ${errorMessage(err)}; start nats-server with JetStream (-js) or fix --nats`,
        { cause: err },
      );
    });
    nc = conn;
    lifecycle.add('nats', () => conn.drain());
    store = await openJetStreamEventStore({ nc, streamName: config.streamName, subjectPrefix: config.subjectPrefix, logger });
    bus = createNatsBus(nc, config.subjectPrefix);
    statePublisher = await createStatePublisher({ nc, stream: stateStreamName(config.streamName), prefix: config.subjectPrefix });
    const nodeBucket = `${config.subjectPrefix}_nodes`;
    nodes = kvNodeDirectory(await openNodeBucket(nc, nodeBucket, DEFAULT_ROUTE_TTL_MS));
    if (!config.nodeId) {
      const registration = await claimNodeId({
        nc,
        bucket: nodeBucket,
        // Routes and node entries age out together (shared/cluster/routes.ts).
        ttlMs: DEFAULT_ROUTE_TTL_MS,
        logger,
        info: {
          control_address: controlAddressHint,
          started_at: startedAt,
          version: VERSION,
          ...(bridgeAddress ? { bridge_address: bridgeAddress, advertise_host: advertiseHost } : {}),
        },
        stats: () => edgeStats?.(),
        onLost: () => void lifecycle.close().then(() => process.exit(1)),
      });
      nodeId = registration.nodeId;
      lifecycle.add('node-registration', () => registration.release());
    }
    const routes = await ClientRoutes.open({ nc, bucket: `${config.subjectPrefix}_routes`, ttlMs: DEFAULT_ROUTE_TTL_MS, logger });
    clientRoutes = routes;
    lifecycle.add('client-routes', () => routes.close());
  } else {
    store = new PostgresEventStore({ db, pool, logger });
    bus = createMemoryBus();
  }
  lifecycle.add('event-store', () => store.close());
  lifecycle.add('change-bus', () => bus.close());
  const log = logger.child({ nodeId });

  const projector = await startProjector({
    store,
    db,
    bus,
    logger: log,
    // Every node runs the projector; per-node consumers, one shared checkpoint (applied once).
    instance: nodeId,
    // JetStream mode: edges build their view from the state stream the projector writes.
    ...(statePublisher ? { statePublisher } : {}),
    // A halted projection means writes can no longer be read back: stop loudly and let the
    // supervisor restart us from the checkpoint (a bad event halts again, by design).
    onHalt: (err) => {
      log.fatal({ err }, 'projection halted; shutting down');
      void lifecycle.close().then(() => process.exit(1));
    },
  });
  lifecycle.add('projector', () => projector.stop());
  const waiter = createProjectionWaiter({ db, bus });
  lifecycle.add('projection-waiter', () => waiter.close());

  // Presence left behind by a crashed previous run of this node id is corrected once the read
  // models have caught up with the log (they may still be replaying right after a restart).
  if (await waiter.waitFor(await store.headPosition(), 30_000)) {
    await closeStaleSessions({ db, store, nodeId, log });
  } else {
    log.warn('read models still catching up after 30 s; stale sessions of this node were not closed');
  }

  // The edge's view of clients and mappings: from the state stream in JetStream mode (the edge
  // itself needs no database), from this process's read models standalone. Only this composition
  // touches the database for it.
  let view: EdgeView;
  if (nc) {
    const opened = await openJetStreamEdgeView({ nc, eventsStream: config.streamName, subjectPrefix: config.subjectPrefix, logger: log });
    lifecycle.add('edge-view', () => opened.feed.stop());
    view = opened.view;
  } else {
    const memory = new MemoryEdgeView();
    const feed = await startReadModelViewFeed({ db, bus, view: memory, logger: log });
    lifecycle.add('edge-view', () => feed.stop());
    view = memory;
  }
  const bridgePool = bridgePort !== undefined && config.clusterSecret ? new BridgePool({ nodeId, secret: config.clusterSecret, log }) : undefined;
  if (bridgePool) lifecycle.add('bridge-pool', () => bridgePool.close());
  const edge = await startEdge({
    store,
    view,
    logger: log,
    nodeId,
    controlHost: config.controlHost,
    controlPort: config.controlPort,
    publicHost: config.publicHost,
    allowAnonymous: config.allowAnonymous,
    anonymousPerMinutePerIp: config.anonymousPerMinutePerIp,
    ...(clientRoutes ? { routes: new EdgeRoutes({ routes: clientRoutes, nodeId, logger: log }) } : {}),
    ...(bridgePool && clientRoutes && bridgePort !== undefined && config.clusterSecret
      ? {
          bridge: {
            secret: config.clusterSecret,
            host: bridgeHost,
            port: bridgePort,
            remote: bridgedTargets({
              nodeId,
              routes: clientRoutes,
              bridgeAddressOf: async (peer) => (await nodes?.get(peer))?.bridge_address ?? null,
              pool: bridgePool,
              logger: log,
            }),
          },
        }
      : {}),
  });
  lifecycle.add('edge', () => edge.stop());
  edgeStats = () => {
    const s = edge.stats();
    return { connected_agents: s.sessions, active_tunnels: s.tunnels };
  };
  nodes ??= localNodeDirectory(nodeId, { control_address: `${config.controlHost}:${edge.controlPort}`, started_at: startedAt, version: VERSION }, edgeStats);

  const app = await buildApp({ store, db, waiter, logger: log, apiKeys: [apiKey], publicPortRange: config.publicPortRange, nodes });
  lifecycle.add('api', () => app.close());
  const apiUrl = await app.listen({ host: config.apiHost, port: config.apiPort });

  return {
    mode: config.natsUrl ? 'jetstream' : 'standalone',
    apiUrl,
    controlAddress: `${config.controlHost}:${edge.controlPort}`,
    apiKey,
    apiKeySource,
    apiKeyFile: apiKeyFile(config.dataDir),
    nodeId,
    database: config.databaseUrl ? 'external' : 'embedded',
  };
}

/** A URL fit for a log line or an error message: any password replaced by `***`. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}
