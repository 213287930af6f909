import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { buildApp } from '../api/index.js';
import { MemoryEdgeView, closeStaleSessions, deriveSessionTokenKey, generateSessionTokenKey, startEdge, startReadModelViewFeed } from '../edge/index.js';
import { createProjectionWaiter, startProjector, type ProjectionWaiter } from '../projector/index.js';
import { createMemoryBus } from '../../shared/bus/memory.js';
import { createStatePublisher, stateStreamName, type StatePublisher } from '../../shared/bus/state.js';
import { localNodeDirectory, type NodeDirectory } from '../../shared/cluster/node-registry.js';
import type { ChangeBus } from '../../shared/contracts/notices.js';
import { PostgresEventStore } from '../../shared/eventstore/postgres.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import type { Lifecycle } from '../../shared/platform/lifecycle.js';
import type { Logger } from '../../shared/platform/logger.js';
import { InfrastructureError } from '../../shared/platform/errors.js';
import { randomToken } from '../../shared/platform/secrets.js';
import { MAPPING_MASTER_KEY_BYTES, deriveMappingMasterKey, generateMappingMasterKey } from '../../shared/platform/mapping-secrets.js';
import { connectNats, edgeSettings, hostPort, loadEdgeTransport, nodeBucketName, tlsNames, openDatabase, openEventLog, startClusterEdge, startClusterPresenceSweeper } from './cluster.js';
import { floodOptions, type ServerConfig } from './config.js';
import { startEmbeddedPostgres } from './embedded-postgres.js';
import { startMetrics } from './metrics.js';
import { VERSION } from './version.js';
import { startAnonymousExpiry } from '../projector/expiry.js';

export interface RunningServer {
  mode: 'standalone' | 'jetstream';
  apiUrl: string;
  controlAddress: string;
  apiKey: string;
  apiKeySource: ApiKeySource;
  /** Where a generated key is kept (absolute). */
  apiKeyFile: string;
  nodeId: string;
  database: 'embedded' | 'external';
  /** host:port of GET /metrics; undefined with --metrics-port 0. */
  metrics: string | undefined;
  /** SHA-256 fingerprint of the edge's TLS certificate (sha256:…). */
  fingerprint: string;
  /** host:port of the WebSocket endpoint (path /tunnox); undefined with --ws-port 0. */
  wsAddress: string | undefined;
  plaintext: boolean;
}

export function apiKeyFile(dataDir: string): string {
  return join(resolve(dataDir), 'admin-api-key');
}

export type ApiKeySource = 'flag' | 'generated' | 'data-dir';

/**
 * The admin API key: given explicitly, or generated on first start and kept (0600) in the data dir
 * (created private, parents with the usual 0755).
 */
export async function resolveApiKey(given: string | undefined, dataDir: string): Promise<{ key: string; source: ApiKeySource; file: string }> {
  const file = apiKeyFile(dataDir);
  if (given) return { key: given, source: 'flag', file };
  if (existsSync(file)) return { key: (await readFile(file, 'utf8')).trim(), source: 'data-dir', file };
  await mkdir(dirname(resolve(dataDir)), { recursive: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const key = randomToken('tnxk_', 32);
  await writeFile(file, key + '\n', { mode: 0o600 });
  return { key, source: 'generated', file };
}

/**
 * The session token key: derived from the cluster secret (every server of the cluster accepts
 * every other's tokens), else generated once and kept (0600) in the data dir, so tokens survive a
 * restart of this server. Never the secret itself (HKDF with its own label).
 */
async function sessionTokenKey(config: ServerConfig): Promise<Buffer> {
  if (config.clusterSecret) return deriveSessionTokenKey(config.clusterSecret);
  const file = join(resolve(config.dataDir), 'session-token-key');
  if (existsSync(file)) {
    const key = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64url');
    if (key.length >= 32) return key;
    throw new InfrastructureError('TNX_SESSION_TOKEN_KEY_INVALID', `${file} does not hold a session token key; delete it to generate a new one`);
  }
  const key = generateSessionTokenKey();
  await writeFile(file, key.toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  return key;
}

/**
 * The master key mapping secrets are derived from (shared/platform/mapping-secrets.ts): derived
 * from the cluster secret (every server derives the same secrets), else generated once and kept
 * (0600) in the data dir as `mapping-master-key`, so agents' mapping secrets survive a restart.
 * Losing the file changes every mapping's secret; agents get the new ones in their next config push.
 */
export async function mappingMasterKey(config: Pick<ServerConfig, 'clusterSecret' | 'dataDir'>): Promise<Buffer> {
  if (config.clusterSecret) return deriveMappingMasterKey(config.clusterSecret);
  const file = join(resolve(config.dataDir), 'mapping-master-key');
  if (existsSync(file)) {
    const key = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64url');
    if (key.length >= MAPPING_MASTER_KEY_BYTES) return key;
    throw new InfrastructureError('TNX_MAPPING_MASTER_KEY_INVALID', `${file} does not hold a mapping master key; delete it to generate a new one (every mapping secret changes)`);
  }
  const key = generateMappingMasterKey();
  await writeFile(file, key.toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  return key;
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
  const { key: apiKey, source: apiKeySource } = await resolveApiKey(config.apiKey, config.dataDir);
  // Before the database starts: a metrics port taken by another process fails the start at once.
  const m = await startMetrics(config, 'server', logger, lifecycle);
  const metrics = m?.metrics;

  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    const embedded = await startEmbeddedPostgres(config.dataDir, logger);
    lifecycle.add('embedded-postgres', () => embedded.stop());
    databaseUrl = embedded.url;
  }
  const { db, pool } = await openDatabase(databaseUrl, logger, lifecycle);

  // Runs the projector (every node runs it: per-node consumers, one shared checkpoint, so each
  // event is applied once) and, once the read models caught up, closes the sessions a crashed
  // previous run of this node id left behind (they may still be replaying right after a restart).
  const startReadSide = async (store: EventStore, bus: ChangeBus, nodeId: string, log: Logger, statePublisher?: StatePublisher) => {
    const projector = await startProjector({
      store,
      db,
      bus,
      logger: log,
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
    metrics?.watchProjector(projector, store);
    const waiter = createProjectionWaiter({ db, bus });
    lifecycle.add('projection-waiter', () => waiter.close());
    if (await waiter.waitFor(await store.headPosition(), 30_000)) {
      await closeStaleSessions({ db, store, nodeId, log });
    } else {
      log.warn('read models still catching up after 30 s; stale sessions of this node were not closed');
    }
    if (config.anonymousTtlMs > 0) {
      const expiry = startAnonymousExpiry({ db, store, logger: log, ttlMs: config.anonymousTtlMs, actorId: nodeId });
      lifecycle.add('anonymous-expiry', () => expiry.stop());
    }
    return waiter;
  };

  const transport = await loadEdgeTransport(config, tlsNames(config.controlHost, config.advertiseHost), logger);
  let wsAddress: string | undefined;
  let store: EventStore;
  let nodeId: string;
  let controlAddress: string;
  let nodes: NodeDirectory;
  let waiter!: ProjectionWaiter;
  let log: Logger;
  if (config.natsUrl) {
    const nc = await connectNats(config.natsUrl, 'tunnox-server', lifecycle);
    const names = { streamName: config.streamName, subjectPrefix: config.subjectPrefix, streamReplicas: config.streamReplicas };
    const log0 = await openEventLog(nc, names, logger, lifecycle, metrics);
    store = log0.store;
    const statePublisher = await createStatePublisher({ nc, stream: stateStreamName(config.streamName), prefix: config.subjectPrefix, replicas: config.streamReplicas });
    const cluster = await startClusterEdge({
      nc,
      store,
      config: {
        ...names,
        ...edgeSettings(config, transport),
        controlHost: config.controlHost,
        publicHost: config.publicHost,
        sessionTokenKey: await sessionTokenKey(config),
        mappingKey: await mappingMasterKey(config),
      },
      logger,
      lifecycle,
      ...(metrics ? { metrics } : {}),
      beforeEdge: async (id, l) => {
        waiter = await startReadSide(log0.store, log0.bus, id, l, statePublisher);
      },
    });
    ({ nodeId, controlAddress, nodes } = cluster);
    if (cluster.edge.wsPort !== undefined) wsAddress = hostPort(config.advertiseHost ?? config.controlHost, cluster.edge.wsPort);
    log = logger.child({ nodeId });
    // Sessions of servers that died (kill -9, power loss) and did not come back: the lowest live
    // node sweeps them (services/projector/presence.ts).
    await startClusterPresenceSweeper({
      nc,
      db,
      store,
      subjectPrefix: config.subjectPrefix,
      streamReplicas: config.streamReplicas,
      leaderBucket: nodeBucketName(config.subjectPrefix),
      self: nodeId,
      actorId: nodeId,
      logger: log,
      lifecycle,
      routes: cluster.routes,
    });
  } else {
    const pgStore = new PostgresEventStore({ db, pool, logger });
    store = metrics ? metrics.instrumentEventStore(pgStore) : pgStore;
    lifecycle.add('event-store', () => store.close());
    const bus = createMemoryBus();
    lifecycle.add('change-bus', () => bus.close());
    nodeId = config.nodeId ?? 'node-001';
    log = logger.child({ nodeId });
    waiter = await startReadSide(store, bus, nodeId, log);
    // Standalone, the edge's view of clients and mappings comes from this process's read models;
    // only this composition touches the database for it.
    const view = new MemoryEdgeView();
    const feed = await startReadModelViewFeed({ db, bus, view, logger: log });
    lifecycle.add('edge-view', () => feed.stop());
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
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      heartbeatTimeoutMs: config.heartbeatTimeoutMs,
      ...floodOptions(config.floodLimits),
      sessionTokens: { key: await sessionTokenKey(config) },
      mappingKey: await mappingMasterKey(config),
      tls: transport.tls,
      allowPlaintext: transport.allowPlaintext,
      ...(transport.wsPort !== undefined ? { wsPort: transport.wsPort } : {}),
      ...(metrics ? { metrics } : {}),
    });
    if (edge.wsPort !== undefined) wsAddress = hostPort(config.controlHost, edge.wsPort);
    metrics?.watchEdge(edge);
    // SIGTERM drains the edge (agents move at once, running tunnels may finish) before it stops.
    lifecycle.add('edge', () => edge.drain(config.drainTimeoutMs));
    controlAddress = `${config.controlHost}:${edge.controlPort}`;
    const startedAt = new Date().toISOString();
    nodes = localNodeDirectory(nodeId, { control_address: controlAddress, started_at: startedAt, version: VERSION }, () => {
      const s = edge.stats();
      return { connected_agents: s.sessions, active_tunnels: s.tunnels };
    });
  }

  const app = await buildApp({
    store,
    db,
    waiter,
    logger: log,
    apiKeys: [apiKey],
    publicPortRange: config.publicPortRange,
    defaultTier: config.defaultTier,
    corsOrigins: config.corsOrigins,
    rateLimitPerMinute: config.apiRateLimit,
    nodes,
    ...(metrics ? { metrics } : {}),
  });
  lifecycle.add('api', () => app.close());
  const apiUrl = await app.listen({ host: config.apiHost, port: config.apiPort });

  return {
    mode: config.natsUrl ? 'jetstream' : 'standalone',
    apiUrl,
    controlAddress,
    apiKey,
    apiKeySource,
    apiKeyFile: apiKeyFile(config.dataDir),
    nodeId,
    database: config.databaseUrl ? 'external' : 'embedded',
    metrics: m?.address,
    fingerprint: transport.tls.fingerprint,
    wsAddress,
    plaintext: transport.allowPlaintext,
  };
}
