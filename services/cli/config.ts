import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';

const Port = z.number().int().min(0).max(65535);
/** Every role's GET /metrics listener (services/cli/metrics.ts); port 0 turns metrics off. */
const MetricsFields = {
  metricsHost: z.string().min(1),
  metricsPort: Port,
};

/**
 * The edge's heartbeat (EdgeOptions.heartbeatIntervalMs / heartbeatTimeoutMs): the deadline must be
 * longer than the interval, and at most 45 s, so a silent agent is offline within 45 s.
 */
const HeartbeatFields = {
  heartbeatIntervalMs: z.number().int().min(100),
  heartbeatTimeoutMs: z.number().int().min(200).max(45_000, 'the heartbeat timeout must be at most 45 s'),
};
const heartbeatOrder = (c: { heartbeatIntervalMs: number; heartbeatTimeoutMs: number }): boolean => c.heartbeatTimeoutMs > c.heartbeatIntervalMs;
const HEARTBEAT_ORDER = { message: '--heartbeat-timeout must be longer than --heartbeat-interval', path: ['heartbeatTimeoutMs'] };

const AnonymousTtl = z.number().int().min(0);
/** How agents reach an edge (`tunnox server` and `tunnox edge`): TLS certificate, plaintext, WebSocket. */
const TransportFields = {
  /** PEM certificate (chain) and key; both or neither. Neither: a self-signed one generated into the data dir. */
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  /** Also accept plain TCP (tcp://) and plain WebSocket (ws://) agents. */
  allowPlaintext: z.boolean(),
  /** WebSocket port (path /tunnox); 0 = no WebSocket. */
  wsPort: Port,
};

/**
 * The edge's flood limits (--max-connections-per-mapping, --max-pending-opens-per-mapping,
 * --visitor-rate, --visitor-burst): defaults for mappings that set none, and the per-IP token
 * bucket of new visitor connections on public ports (visitorRatePerIp 0 = no limit).
 */
export const FloodLimitsSchema = z.strictObject({
  maxConnectionsPerMapping: z.number().int().min(1),
  maxPendingOpensPerMapping: z.number().int().min(1),
  visitorRatePerIp: z.number().int().min(0),
  visitorBurstPerIp: z.number().int().min(1),
});
export type FloodLimits = z.infer<typeof FloodLimitsSchema>;

/** The EdgeOptions a FloodLimits config stands for. */
export function floodOptions(f: FloodLimits): { tunnelLimits: { maxConnectionsPerMapping: number; maxPendingOpensPerMapping: number }; visitorRate: { perSecond: number; burst: number } } {
  return {
    tunnelLimits: { maxConnectionsPerMapping: f.maxConnectionsPerMapping, maxPendingOpensPerMapping: f.maxPendingOpensPerMapping },
    visitorRate: { perSecond: f.visitorRatePerIp, burst: f.visitorBurstPerIp },
  };
}

/** Parsed once at start-up from flags and environment (main.ts); strict: unknown keys are a bug. */
export const ServerConfigSchema = z.strictObject({
  dataDir: z.string().min(1),
  apiHost: z.string().min(1),
  apiPort: Port,
  controlHost: z.string().min(1),
  controlPort: Port,
  publicHost: z.string().min(1),
  publicPortRange: z
    .strictObject({ min: z.number().int().min(1).max(65535), max: z.number().int().min(1).max(65535) })
    .refine((r) => r.min <= r.max, { message: 'min must be <= max' }),
  apiKey: z.string().min(16, 'the API key must be at least 16 characters').optional(),
  natsUrl: z.string().url().optional(),
  databaseUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  nodeId: z.string().regex(/^node-\d{3,4}$/).optional(),
  allowAnonymous: z.boolean(),
  anonymousPerMinutePerIp: z.number().int().min(0),
  /** Anonymous clients unused this long expire (services/projector/expiry.ts); 0 = never. */
  anonymousTtlMs: AnonymousTtl,
  floodLimits: FloodLimitsSchema,
  streamName: z.string().regex(/^[A-Za-z0-9_-]+$/),
  subjectPrefix: z.string().regex(/^[a-z0-9_-]+$/),
  /** JetStream replicas of the streams and KV buckets this process creates (existing ones keep theirs). */
  streamReplicas: z.number().int().min(1).max(5),
  /** JetStream mode: the node-to-node bridge (0 = any free port); served only with a cluster secret. */
  bridgePort: Port,
  /** The address other servers reach this one's bridge at; default: the control host, or 127.0.0.1 for a wildcard. */
  advertiseHost: z.string().min(1).optional(),
  /** Shared by every server of a cluster: authenticates bridge streams. */
  clusterSecret: z.string().min(16, 'the cluster secret must be at least 16 characters').optional(),
  /** On SIGTERM the edge drains: running tunnels get this long before they are reset. */
  drainTimeoutMs: z.number().int().min(0),
  ...HeartbeatFields,
  ...TransportFields,
  ...MetricsFields,
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** The quota tier of users created without one (and of accounts from before quotas). */
  defaultTier: z.enum(['unlimited', 'free', 'pro', 'enterprise']),
  /** Browser origins the Management API answers CORS requests from (`*`: any). */
  corsOrigins: z.array(
    z.string().refine((o) => o === '*' || /^https?:\/\/[^/\s]+$/.test(o), { message: 'an origin is scheme://host[:port] (no path), or *' }),
  ),
  /** Management API requests per minute per API key; 0 = no limit. */
  apiRateLimit: z.number().int().min(0),
}).refine(heartbeatOrder, HEARTBEAT_ORDER);
export type ServerConfig = z.infer<typeof ServerConfigSchema>;

const NatsUrl = z.string({ error: (i) => (i.input === undefined ? '--nats (or $TUNNOX_NATS_URL) is required' : 'must be a string') }).url();
const DatabaseUrl = z
  .string({ error: (i) => (i.input === undefined ? '--database (or $TUNNOX_DATABASE_URL) is required' : 'must be a string') })
  .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL');
const LogLevel = ServerConfigSchema.shape.logLevel;
/** The event log and subjects every process of one cluster must agree on. */
const ClusterFields = {
  natsUrl: NatsUrl,
  streamName: ServerConfigSchema.shape.streamName,
  subjectPrefix: ServerConfigSchema.shape.subjectPrefix,
  streamReplicas: ServerConfigSchema.shape.streamReplicas,
  ...MetricsFields,
  logLevel: LogLevel,
};
/** `host:port` of an optional health endpoint (GET /healthz). */
const HealthAddress = z.string().min(1).optional();

/** `tunnox api`: the Management API alone (JetStream event log, PostgreSQL read models). */
export const ApiRoleConfigSchema = z.strictObject({
  ...ClusterFields,
  databaseUrl: DatabaseUrl,
  dataDir: ServerConfigSchema.shape.dataDir,
  apiHost: ServerConfigSchema.shape.apiHost,
  apiPort: Port,
  apiKey: ServerConfigSchema.shape.apiKey,
  publicPortRange: ServerConfigSchema.shape.publicPortRange,
  defaultTier: ServerConfigSchema.shape.defaultTier,
  corsOrigins: ServerConfigSchema.shape.corsOrigins,
  apiRateLimit: ServerConfigSchema.shape.apiRateLimit,
});
export type ApiRoleConfig = z.infer<typeof ApiRoleConfigSchema>;

/** `tunnox projector`: read models and the state stream. */
export const ProjectorRoleConfigSchema = z.strictObject({
  ...ClusterFields,
  databaseUrl: DatabaseUrl,
  health: HealthAddress,
  /** How often sessions of dead edges are looked for (ms); a session is closed at its second sighting. */
  presenceSweepMs: z.number().int().min(100).optional(),
  anonymousTtlMs: AnonymousTtl,
});
export type ProjectorRoleConfig = z.infer<typeof ProjectorRoleConfigSchema>;

/** `tunnox edge`: from NATS alone; no database. */
export const EdgeRoleConfigSchema = z.strictObject({
  ...ClusterFields,
  ...TransportFields,
  /** Where a generated TLS certificate is kept. */
  dataDir: ServerConfigSchema.shape.dataDir,
  listenHost: z.string().min(1),
  controlPort: Port,
  bridgePort: Port,
  advertiseHost: ServerConfigSchema.shape.advertiseHost,
  clusterSecret: ServerConfigSchema.shape.clusterSecret,
  nodeId: ServerConfigSchema.shape.nodeId,
  allowAnonymous: z.boolean(),
  anonymousPerMinutePerIp: z.number().int().min(0),
  floodLimits: FloodLimitsSchema,
  health: HealthAddress,
  /** On SIGTERM: how long running tunnels may go on while agents move (RunningEdge.drain). */
  drainTimeoutMs: z.number().int().min(0),
  ...HeartbeatFields,
}).refine(heartbeatOrder, HEARTBEAT_ORDER);
export type EdgeRoleConfig = z.infer<typeof EdgeRoleConfigSchema>;

export function defaultDataDir(): string {
  // Root runs services: the FHS place (and the embedded PostgreSQL's system user can reach it).
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/var/lib/tunnox/server';
  const base = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(base, 'tunnox', 'server');
}

/** `tunnox edge`'s data dir (a generated TLS certificate): beside the server's. */
export function defaultEdgeDataDir(): string {
  return join(defaultDataDir(), '..', 'edge');
}

export function defaultCredentialsPath(): string {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'tunnox', 'credentials.json');
}

/** "20000-29999" → {min, max}. */
export function parsePortRange(value: string): { min: number; max: number } {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(value.trim());
  if (!m) throw new Error(`invalid port range "${value}" (expected MIN-MAX, e.g. 20000-29999)`);
  return { min: Number(m[1]), max: Number(m[2]) };
}
