import { buildApp } from '../api/index.js';
import { createProjectionWaiter, startProjector } from '../projector/index.js';
import { createStatePublisher, stateStreamName } from '../../shared/bus/state.js';
import { claimNodeId } from '../../shared/cluster/node-registry.js';
import { DEFAULT_ROUTE_TTL_MS } from '../../shared/cluster/routes.js';
import { parseHostPort } from '../../shared/net/address.js';
import { serveHealth, type HealthReport } from '../../shared/platform/health.js';
import type { Lifecycle } from '../../shared/platform/lifecycle.js';
import type { Logger } from '../../shared/platform/logger.js';
import { connectNats, edgeSettings, hostPort, loadEdgeTransport, tlsNames, openDatabase, openEventLog, openNodeDirectory, startClusterEdge, startClusterPresenceSweeper, type ClusterNames } from './cluster.js';
import type { ApiRoleConfig, EdgeRoleConfig, ProjectorRoleConfig } from './config.js';
import { startMetrics } from './metrics.js';
import { resolveApiKey, type ApiKeySource } from './server.js';
import { VERSION } from './version.js';
import { startAnonymousExpiry } from '../projector/expiry.js';

/*
 * One process per role, for a cluster scaled role by role (DESIGN.md §3): any number of API and
 * projector processes against one PostgreSQL, and edges that run from NATS alone. `tunnox server`
 * composes the same blocks (cluster.ts) in one process.
 */

async function health(address: string | undefined, report: () => HealthReport, lifecycle: Lifecycle, log: Logger): Promise<string | undefined> {
  if (!address) return undefined;
  const { host, port } = parseHostPort(address);
  const server = await serveHealth(host, port, report);
  lifecycle.add('health', () => server.close());
  const bound = hostPort(host, server.port);
  log.info({ health: bound }, 'health endpoint listening');
  return bound;
}

export interface RunningApi {
  apiUrl: string;
  apiKey: string;
  apiKeySource: ApiKeySource;
  apiKeyFile: string;
  /** host:port of GET /metrics; undefined with --metrics-port 0. */
  metrics: string | undefined;
}

/**
 * The Management API: commands go to the JetStream event log, queries to the read models, and a
 * write answers once the projector (another process) has applied it, told by its NATS notices.
 */
export async function runApi(config: ApiRoleConfig, logger: Logger, lifecycle: Lifecycle): Promise<RunningApi> {
  const key = await resolveApiKey(config.apiKey, config.dataDir);
  // First: a port taken by another process fails the start before anything else opens.
  const m = await startMetrics(config, 'api', logger, lifecycle);
  const { db } = await openDatabase(config.databaseUrl, logger, lifecycle);
  const nc = await connectNats(config.natsUrl, 'tunnox-api', lifecycle);
  const { store, bus } = await openEventLog(nc, config, logger, lifecycle, m?.metrics);
  const waiter = createProjectionWaiter({ db, bus });
  lifecycle.add('projection-waiter', () => waiter.close());
  const nodes = await openNodeDirectory(nc, config.subjectPrefix, config.streamReplicas);
  const app = await buildApp({
    store,
    db,
    waiter,
    logger,
    apiKeys: [key.key],
    publicPortRange: config.publicPortRange,
    defaultTier: config.defaultTier,
    corsOrigins: config.corsOrigins,
    rateLimitPerMinute: config.apiRateLimit,
    nodes,
    ...(m ? { metrics: m.metrics } : {}),
  });
  lifecycle.add('api', () => app.close());
  const apiUrl = await app.listen({ host: config.apiHost, port: config.apiPort });
  return { apiUrl, apiKey: key.key, apiKeySource: key.source, apiKeyFile: key.file, metrics: m?.address };
}

export function projectorBucketName(names: ClusterNames): string {
  return `${names.subjectPrefix}_projectors`;
}

export interface RunningProjectorRole {
  instance: string;
  health: string | undefined;
  metrics: string | undefined;
}

/**
 * The projector: folds the event log into the read models and writes the state stream edges build
 * their view from. Each process wins an instance name in the `<prefix>_projectors` bucket (the
 * node-id scheme), which names its durable consumer: a restarted projector reuses a free name, and
 * one checkpoint row shared by all of them makes each event apply once.
 */
export async function runProjector(config: ProjectorRoleConfig, logger: Logger, lifecycle: Lifecycle): Promise<RunningProjectorRole> {
  const m = await startMetrics(config, 'projector', logger, lifecycle);
  const { db } = await openDatabase(config.databaseUrl, logger, lifecycle);
  const nc = await connectNats(config.natsUrl, 'tunnox-projector', lifecycle);
  const { store, bus } = await openEventLog(nc, config, logger, lifecycle, m?.metrics);
  const statePublisher = await createStatePublisher({ nc, stream: stateStreamName(config.streamName), prefix: config.subjectPrefix, replicas: config.streamReplicas });
  const registration = await claimNodeId({
    nc,
    bucket: projectorBucketName(config),
    replicas: config.streamReplicas,
    ttlMs: DEFAULT_ROUTE_TTL_MS,
    logger,
    // The registry entry shape is the edges'; a projector serves no agents, so it has no control address.
    info: { control_address: '-', started_at: new Date().toISOString(), version: VERSION },
    onLost: () => void lifecycle.close().then(() => process.exit(1)),
  });
  lifecycle.add('projector-registration', () => registration.release());
  const instance = `p${registration.nodeId.slice('node-'.length)}`;
  const log = logger.child({ projector: instance });
  let halted = false;
  const projector = await startProjector({
    store,
    db,
    bus,
    logger: log,
    instance,
    statePublisher,
    onHalt: (err) => {
      halted = true;
      log.fatal({ err }, 'projection halted; shutting down');
      void lifecycle.close().then(() => process.exit(1));
    },
  });
  lifecycle.add('projector', () => projector.stop());
  m?.metrics.watchProjector(projector, store);
  await startClusterPresenceSweeper({
    nc,
    db,
    store,
    subjectPrefix: config.subjectPrefix,
    streamReplicas: config.streamReplicas,
    leaderBucket: projectorBucketName(config),
    self: registration.nodeId,
    actorId: `projector-${instance}`,
    logger: log,
    lifecycle,
    ...(config.presenceSweepMs ? { intervalMs: config.presenceSweepMs } : {}),
  });
  if (config.anonymousTtlMs > 0) {
    const expiry = startAnonymousExpiry({ db, store, logger: log, ttlMs: config.anonymousTtlMs, actorId: `projector-${instance}` });
    lifecycle.add('anonymous-expiry', () => expiry.stop());
  }
  const bound = await health(
    config.health,
    () => ({ ok: !halted && !nc.isClosed(), body: { role: 'projector', instance, position: projector.position, halted } }),
    lifecycle,
    log,
  );
  return { instance, health: bound, metrics: m?.address };
}

export interface RunningEdgeRole {
  nodeId: string;
  controlAddress: string;
  bridgeAddress: string | undefined;
  health: string | undefined;
  metrics: string | undefined;
  /** SHA-256 fingerprint of the edge's TLS certificate. */
  fingerprint: string;
  /** host:port of the WebSocket endpoint; undefined with --ws-port 0. */
  wsAddress: string | undefined;
}

/**
 * An edge from NATS alone: no database URL, no query on the handshake, TunnelOpen or accept path.
 * All its listeners (control, public ports, bridge) bind `--listen-host`, so several edges can share
 * a machine on 127.0.0.1, 127.0.0.2 and 127.0.0.3.
 */
export async function runEdge(config: EdgeRoleConfig, logger: Logger, lifecycle: Lifecycle): Promise<RunningEdgeRole> {
  const m = await startMetrics(config, 'edge', logger, lifecycle);
  const transport = await loadEdgeTransport(config, tlsNames(config.listenHost, config.advertiseHost), logger);
  const nc = await connectNats(config.natsUrl, 'tunnox-edge', lifecycle);
  const { store } = await openEventLog(nc, config, logger, lifecycle, m?.metrics);
  const cluster = await startClusterEdge({
    nc,
    store,
    config: {
      streamName: config.streamName,
      subjectPrefix: config.subjectPrefix,
      streamReplicas: config.streamReplicas,
      ...edgeSettings(config, transport),
      controlHost: config.listenHost,
      publicHost: config.listenHost,
    },
    logger,
    lifecycle,
    ...(m ? { metrics: m.metrics } : {}),
  });
  const log = logger.child({ nodeId: cluster.nodeId });
  const bound = await health(
    config.health,
    () => {
      const s = cluster.edge.stats();
      return {
        // A draining edge answers 503, so a load balancer stops sending visitors to it.
        ok: !lifecycle.isClosing,
        body: {
          role: 'edge',
          node_id: cluster.nodeId,
          control_address: cluster.controlAddress,
          bridge_address: cluster.bridgeAddress ?? null,
          nats: nc.isClosed() ? 'closed' : 'connected',
          connected_agents: s.sessions,
          active_tunnels: s.tunnels,
          public_listeners: s.publicListeners,
        },
      };
    },
    lifecycle,
    log,
  );
  const wsAddress = cluster.edge.wsPort !== undefined ? hostPort(config.advertiseHost ?? config.listenHost, cluster.edge.wsPort) : undefined;
  return { nodeId: cluster.nodeId, controlAddress: cluster.controlAddress, bridgeAddress: cluster.bridgeAddress, health: bound, metrics: m?.address, fingerprint: transport.tls.fingerprint, wsAddress };
}
