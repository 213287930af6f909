import { Command, InvalidArgumentError, Option } from 'commander';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseFingerprint } from '../../shared/transport/cert.js';
import { parseProxyUrl } from '../../shared/transport/proxy.js';
import { createLogger, type Logger } from '../../shared/platform/logger.js';
import { Lifecycle } from '../../shared/platform/lifecycle.js';
import { errorMessage } from '../../shared/platform/errors.js';
import type { z } from 'zod';
import {
  ApiRoleConfigSchema,
  EdgeRoleConfigSchema,
  ProjectorRoleConfigSchema,
  ServerConfigSchema,
  defaultCredentialsPath,
  defaultDataDir,
  defaultEdgeDataDir,
  parsePortRange,
  type ServerConfig,
} from './config.js';
import { VERSION } from './version.js';
import { ctlCommand } from './ctl.js';
import { parseHostPort } from '../../shared/net/address.js';
import { DEFAULT_CONTROL_PORT } from '../../shared/wire/packets.js';
import { DEFAULT_WS_PORT } from '../../shared/transport/url.js';
import { parseServerList } from '../client/servers.js';

// The only module that reads process.env and argv; everything below gets parsed config.
// Each command imports its own code when it runs: an agent never loads fastify, kysely, pg, NATS
// or the embedded database (faster start, smaller heap for its byte pumps).

function intArg(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

/** `30d`, `12h`, `10m`, `45s` (or `0`: off) → milliseconds. */
function durationArg(name: string) {
  return (value: string): number => {
    const m = /^(\d{1,9})([smhd])?$/.exec(value.trim());
    if (!m || (m[2] === undefined && m[1] !== '0')) throw new InvalidArgumentError(`${name} must be a duration like 30d, 12h, 10m or 45s (0 = never)`);
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
    return Number(m[1]) * unit;
  };
}
function anonymousTtlOption(): Option {
  return new Option('--anonymous-ttl <duration>', 'anonymous clients unused this long (no session since) expire: ClientExpired, their credentials stop working (e.g. 30d, 12h, 10m; 0 = never)')
    .argParser(durationArg('--anonymous-ttl'))
    .default(30 * 86_400_000, '30d');
}

/** What to do about the system errors a start-up commonly meets (our own errors already say it). */
function hint(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE') return '; another process listens there: stop it, or choose another port (--api-port, --control-port)';
  if (e.code === 'EACCES' && e.syscall === 'listen') return '; ports below 1024 need root or CAP_NET_BIND_SERVICE: choose another port';
  if (e.code === 'ECONNREFUSED') return '; nothing answers there: start it, or check --nats / --database';
  return '';
}

function fail(logger: Logger | undefined, err: unknown): never {
  const message = errorMessage(err) + hint(err);
  if (logger) logger.fatal({ err }, message);
  process.stderr.write(`tunnox: ${message}\n`);
  process.exit(1);
}

/** `--cors-origin a,b` (or $TUNNOX_CORS_ORIGINS): the origins, trimmed; none when absent. */
function corsOrigins(flag: unknown): string[] {
  const text = typeof flag === 'string' ? flag : process.env.TUNNOX_CORS_ORIGINS ?? '';
  return text.split(',').map((o) => o.trim()).filter((o) => o.length > 0);
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const program = new Command()
  .name('tunnox')
  .description('Tunnox: self-hostable, clustered, event-sourced reverse tunnels')
  .version(VERSION)
  .showHelpAfterError();

transportOptions(metricsOptions(
  program
  .command('server')
  .description('run edge + Management API + projector in one process (standalone with embedded PostgreSQL, or JetStream mode with --nats)')
  .option('--data-dir <dir>', 'data directory (embedded PostgreSQL, admin API key)', process.env.TUNNOX_DATA_DIR ?? defaultDataDir())
  .option('--api-host <host>', 'Management API bind address', '127.0.0.1')
  .option('--api-port <port>', 'Management API port (0 = any free port)', intArg('--api-port', 0, 65535), 9000)
  .option('--control-host <host>', 'agent control/tunnel bind address', '0.0.0.0')
  .option('--control-port <port>', 'agent control/tunnel port (0 = any free port)', intArg('--control-port', 0, 65535), DEFAULT_CONTROL_PORT)
  .option('--public-host <host>', 'bind address for public TCP mappings', '0.0.0.0')
  .option('--public-port-range <min-max>', 'range for public ports allocated when a mapping names none', '20000-29999')
  .option('--default-tier <tier>', 'quota tier of users created without one: unlimited, free, pro or enterprise', 'unlimited')
  .option('--cors-origin <origins>', 'browser origins (comma-separated, exactly as sent: https://console.example.com; * for any) allowed to call the Management API; default none')
  .option('--api-rate-limit <n>', 'Management API requests per minute per API key (429 beyond); 0 = no limit', intArg('--api-rate-limit', 0, 10_000_000), 6000)
  .option('--api-key <key>', 'admin API key (default: $TUNNOX_API_KEY, else generated once and kept in the data dir)')
  .option('--nats <url>', 'NATS JetStream URL: use JetStream as the event log (cluster mode)')
  .option('--database <url>', 'PostgreSQL URL for read models (default: embedded PostgreSQL in the data dir)')
  .option('--no-anonymous', 'refuse agents without credentials (no anonymous registration)')
  .option('--anonymous-rate <n>', 'anonymous registrations allowed per remote IP per minute', intArg('--anonymous-rate', 0, 100000), 10)
  .addOption(anonymousTtlOption())
  .option('--max-connections-per-mapping <n>', 'concurrent tunnels of one mapping on this edge, for mappings that set no max_connections', intArg('--max-connections-per-mapping', 1, 1000000), 10000)
  .option('--max-pending-opens-per-mapping <n>', 'visitors of one mapping waiting for the target agent here, for mappings that set no max_pending_opens', intArg('--max-pending-opens-per-mapping', 1, 100000), 256)
  .option('--visitor-rate <n>', 'new visitor connections per second per source IP on public ports (0 = no limit)', intArg('--visitor-rate', 0, 1000000), 100)
  .option('--visitor-burst <n>', 'burst of new visitor connections per source IP on public ports', intArg('--visitor-burst', 1, 1000000), 500)
  .option('--node-id <id>', 'fixed node id (default: node-001 standalone, won from the NATS node registry otherwise)')
  .option('--stream <name>', 'JetStream stream for domain events', 'TUNNOX_EVENTS')
  .option('--subject-prefix <prefix>', 'NATS subject prefix', 'tunnox')
  .option('--stream-replicas <n>', 'JetStream mode: replicas of the streams and KV buckets this server creates (3 on a 3-server NATS cluster; existing ones keep theirs)', intArg('--stream-replicas', 1, 5), 1)
  .option('--bridge-port <port>', 'JetStream mode: node-to-node bridge port (0 = any free port)', intArg('--bridge-port', 0, 65535), 50052)
  .option('--advertise <host>', 'JetStream mode: the address other servers reach this bridge at (default: the control host, or 127.0.0.1)')
  .option('--cluster-secret <secret>', 'JetStream mode: secret shared by every server, authenticates the bridge (default: $TUNNOX_CLUSTER_SECRET; without one, tunnels do not cross servers)')
  .option('--heartbeat-interval <seconds>', 'how often the edge heartbeats an idle agent session (and agents heartbeat it)', intArg('--heartbeat-interval', 1, 3600), 10)
  .option('--heartbeat-timeout <seconds>', 'an agent session silent this long is closed, the agent marked offline and its tunnels reset (agents hold the edge to the same deadline); at most 45', intArg('--heartbeat-timeout', 2, 45), 30)
  .option('--drain-timeout <seconds>', 'on SIGTERM, how long running tunnels may go on (agents move to other edges at once) before they are reset', intArg('--drain-timeout', 0, 3600), 30),
))
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.TUNNOX_LOG_LEVEL ?? 'info'))
  .action((o: Flags) =>
    runRole(
      'server',
      () =>
        parseConfig(ServerConfigSchema, {
          dataDir: o.dataDir,
          apiHost: o.apiHost,
          apiPort: o.apiPort,
          controlHost: o.controlHost,
          controlPort: o.controlPort,
          publicHost: o.publicHost,
          publicPortRange: parsePortRange(String(o.publicPortRange)),
          defaultTier: o.defaultTier,
          corsOrigins: corsOrigins(o.corsOrigin),
          apiRateLimit: o.apiRateLimit,
          apiKey: o.apiKey ?? (process.env.TUNNOX_API_KEY || undefined),
          natsUrl: o.nats ?? (process.env.TUNNOX_NATS_URL || undefined),
          databaseUrl: o.database ?? (process.env.TUNNOX_DATABASE_URL || undefined),
          nodeId: o.nodeId,
          allowAnonymous: o.anonymous !== false,
          anonymousPerMinutePerIp: o.anonymousRate,
          anonymousTtlMs: o.anonymousTtl,
          floodLimits: floodLimitValues(o),
          streamName: o.stream,
          subjectPrefix: o.subjectPrefix,
          streamReplicas: o.streamReplicas,
          bridgePort: o.bridgePort,
          advertiseHost: o.advertise,
          clusterSecret: o.clusterSecret ?? (process.env.TUNNOX_CLUSTER_SECRET || undefined),
          drainTimeoutMs: Number(o.drainTimeout) * 1000,
          heartbeatIntervalMs: Number(o.heartbeatInterval) * 1000,
          heartbeatTimeoutMs: Number(o.heartbeatTimeout) * 1000,
          ...transportValues(o),
          ...metricsValues(o),
          logLevel: o.logLevel,
        } satisfies Record<keyof ServerConfig, unknown>),
      async (c, logger, lifecycle) => (await import('./server.js')).runServer(c, logger, lifecycle),
      (running, logger) => {
        logger.info(
          { mode: running.mode, apiUrl: running.apiUrl, controlAddress: running.controlAddress, wsAddress: running.wsAddress, fingerprint: running.fingerprint, nodeId: running.nodeId, database: running.database, metrics: running.metrics },
          'tunnox server ready',
        );
        // The key itself is printed once, when it is generated: under a supervisor this banner lands
        // in the journal on every start. After that we say where it is kept.
        const keyLine =
          running.apiKeySource === 'flag'
            ? 'the one given with --api-key / TUNNOX_API_KEY'
            : running.apiKeySource === 'generated'
              ? `${running.apiKey}   (new: shown this once; kept in ${running.apiKeyFile})`
              : `kept in ${running.apiKeyFile}`;
        const keyRef = running.apiKeySource === 'flag' ? '$TUNNOX_API_KEY' : `$(cat ${running.apiKeyFile})`;
        process.stderr.write(
          [
            '',
            `Tunnox ${VERSION} server, ${running.mode} mode, ${running.nodeId}, ${running.database} PostgreSQL`,
            `  Management API : ${running.apiUrl}/api/v1   (OpenAPI: ${running.apiUrl}/openapi.json)`,
            `  Agent control  : ${running.controlAddress}   (TLS 1.3${running.plaintext ? ', plaintext allowed' : ''})`,
            `  WebSocket      : ${running.wsAddress ? `wss://${running.wsAddress}/tunnox${running.plaintext ? ' (and ws://)' : ''}` : 'off (--ws-port 0)'}`,
            `  TLS fingerprint: ${running.fingerprint}   (agents: --fingerprint ${running.fingerprint})`,
            `  Metrics        : ${running.metrics ? `http://${running.metrics}/metrics` : 'off (--metrics-port 0)'}`,
            `  Admin API key  : ${keyLine}`,
            `  Try            : curl -H "Authorization: Bearer ${keyRef}" ${running.apiUrl}/api/v1/users -d '{"username":"alice","email":"alice@example.com"}' -H 'content-type: application/json'`,
            '',
          ].join('\n') + '\n',
        );
      },
    ),
  );

/** Validates parsed flags against a config schema; the first problem becomes one clear error. */
function parseConfig<S extends z.ZodType>(schema: S, values: Record<string, unknown>): z.infer<S> {
  const parsed = schema.safeParse(values);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`invalid configuration: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return parsed.data;
}

type Flags = Record<string, string | number | boolean | undefined>;

/** `--metrics-host` / `--metrics-port`, on every role (services/cli/metrics.ts). */
function metricsOptions(cmd: Command): Command {
  return cmd
    .option('--metrics-host <host>', 'bind address of GET /metrics (Prometheus); loopback unless a scraper elsewhere must reach it', process.env.TUNNOX_METRICS_HOST || '127.0.0.1')
    .option(
      '--metrics-port <port>',
      'port of GET /metrics (Prometheus; $TUNNOX_METRICS_PORT); 0 turns metrics off. Several tunnox processes on one machine need one port each',
      intArg('--metrics-port', 0, 65535),
      // Checked in metricsValues (NaN when not a number), where a bad value becomes a one-line error.
      process.env.TUNNOX_METRICS_PORT ? Number(process.env.TUNNOX_METRICS_PORT) : 9090,
    );
}

function metricsValues(o: Flags): { metricsHost: unknown; metricsPort: number } {
  const port = o.metricsPort;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error('$TUNNOX_METRICS_PORT must be an integer from 0 to 65535 (0 turns metrics off)');
  }
  return { metricsHost: o.metricsHost, metricsPort: port };
}

/** How agents reach an edge (`tunnox server`, `tunnox edge`). */
function transportOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'PEM certificate (chain) of the control, tunnel and wss connections, with --tls-key (default: a self-signed one generated into the data dir on first start)', process.env.TUNNOX_TLS_CERT)
    .option('--tls-key <file>', 'PEM private key of --tls-cert', process.env.TUNNOX_TLS_KEY)
    .option('--allow-plaintext', 'also accept agents without TLS (tcp://HOST:PORT and ws://) on the same ports; auth codes and traffic then cross the network unencrypted')
    .option('--ws-port <port>', 'WebSocket port for agents behind HTTP-only egress (wss://HOST:PORT/tunnox; 0 = no WebSocket)', intArg('--ws-port', 0, 65535), DEFAULT_WS_PORT);
}

function transportValues(o: Flags): { tlsCert: unknown; tlsKey: unknown; allowPlaintext: boolean; wsPort: unknown } {
  return { tlsCert: o.tlsCert, tlsKey: o.tlsKey, allowPlaintext: o.allowPlaintext === true, wsPort: o.wsPort };
}

/** Flags every cluster process shares: where the event log is and what it is called. */
/** The edge's flood-limit flags (server and edge commands), as FloodLimitsSchema takes them. */
function floodLimitValues(o: Flags): Record<string, unknown> {
  return {
    maxConnectionsPerMapping: o.maxConnectionsPerMapping,
    maxPendingOpensPerMapping: o.maxPendingOpensPerMapping,
    visitorRatePerIp: o.visitorRate,
    visitorBurstPerIp: o.visitorBurst,
  };
}

function clusterOptions(cmd: Command): Command {
  return metricsOptions(cmd)
    .option('--nats <url>', 'NATS JetStream URL (default: $TUNNOX_NATS_URL)')
    .option('--stream <name>', 'JetStream stream for domain events (the same on every process of a cluster)', 'TUNNOX_EVENTS')
    .option('--subject-prefix <prefix>', 'NATS subject prefix (the same on every process of a cluster)', 'tunnox')
    .option('--stream-replicas <n>', 'replicas of the JetStream streams and KV buckets this process creates (3 on a 3-server NATS cluster; existing ones keep theirs)', intArg('--stream-replicas', 1, 5), 1)
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.TUNNOX_LOG_LEVEL ?? 'info'));
}

function clusterValues(o: Flags): Record<string, unknown> {
  return {
    natsUrl: o.nats ?? (process.env.TUNNOX_NATS_URL || undefined),
    streamName: o.stream,
    subjectPrefix: o.subjectPrefix,
    streamReplicas: o.streamReplicas,
    ...metricsValues(o),
    logLevel: o.logLevel,
  };
}

/**
 * Runs one role: config, logger, signal handling, then `start`; a failed start closes what it
 * opened and becomes one `tunnox:` line. `ready` logs the line tests and supervisors wait for.
 */
async function runRole<C extends { logLevel: string; drainTimeoutMs?: number }, R>(
  name: string,
  config: () => C,
  start: (config: C, logger: Logger, lifecycle: Lifecycle) => Promise<R>,
  ready: (running: R, logger: Logger) => void,
): Promise<void> {
  let logger: Logger | undefined;
  try {
    const c = config();
    logger = createLogger({ level: c.logLevel, name: `tunnox-${name}` });
    const lifecycle = new Lifecycle(logger);
    // An edge drains first: the shutdown's own grace comes on top of the drain timeout.
    lifecycle.installSignalHandlers(undefined, (c.drainTimeoutMs ?? 0) + 15_000);
    const running = await start(c, logger, lifecycle).catch(async (err: unknown) => {
      await lifecycle.close();
      throw err;
    });
    ready(running, logger);
  } catch (err) {
    fail(logger, err);
  }
}

clusterOptions(
  program
    .command('api')
    .description('run the Management API alone (cluster: JetStream event log, PostgreSQL read models written by `tunnox projector`)')
    .option('--database <url>', 'PostgreSQL URL of the read models (default: $TUNNOX_DATABASE_URL)')
    .option('--data-dir <dir>', 'where a generated admin API key is kept', process.env.TUNNOX_DATA_DIR ?? defaultDataDir())
    .option('--api-host <host>', 'Management API bind address', '127.0.0.1')
    .option('--api-port <port>', 'Management API port (0 = any free port)', intArg('--api-port', 0, 65535), 9000)
    .option('--api-key <key>', 'admin API key (default: $TUNNOX_API_KEY, else generated once and kept in the data dir)')
    .option('--public-port-range <min-max>', 'range for public ports allocated when a mapping names none', '20000-29999')
    .option('--default-tier <tier>', 'quota tier of users created without one: unlimited, free, pro or enterprise', 'unlimited')
    .option('--cors-origin <origins>', 'browser origins (comma-separated, exactly as sent: https://console.example.com; * for any) allowed to call the Management API; default none')
    .option('--api-rate-limit <n>', 'Management API requests per minute per API key (429 beyond); 0 = no limit', intArg('--api-rate-limit', 0, 10_000_000), 6000),
).action((o: Flags) =>
  runRole(
    'api',
    () =>
      parseConfig(ApiRoleConfigSchema, {
        ...clusterValues(o),
        databaseUrl: o.database ?? (process.env.TUNNOX_DATABASE_URL || undefined),
        dataDir: o.dataDir,
        apiHost: o.apiHost,
        apiPort: o.apiPort,
        apiKey: o.apiKey ?? (process.env.TUNNOX_API_KEY || undefined),
        publicPortRange: parsePortRange(String(o.publicPortRange)),
        defaultTier: o.defaultTier,
        corsOrigins: corsOrigins(o.corsOrigin),
        apiRateLimit: o.apiRateLimit,
      }),
    async (c, logger, lifecycle) => (await import('./roles.js')).runApi(c, logger, lifecycle),
    (r, logger) => {
      logger.info({ apiUrl: r.apiUrl, apiKeySource: r.apiKeySource, metrics: r.metrics }, 'tunnox api ready');
      if (r.apiKeySource === 'generated') process.stderr.write(`Admin API key: ${r.apiKey}   (new: shown this once; kept in ${r.apiKeyFile})\n`);
    },
  ),
);

clusterOptions(
  program
    .command('projector')
    .description('run the projector alone: folds the JetStream event log into the PostgreSQL read models and the edges\' state stream')
    .option('--database <url>', 'PostgreSQL URL of the read models (default: $TUNNOX_DATABASE_URL)')
    .option('--health <host:port>', 'serve GET /healthz on this address')
    .option('--presence-sweep <seconds>', 'how often sessions of edges that died are looked for (closed at the second sighting)', intArg('--presence-sweep', 1, 3600), 30)
    .addOption(anonymousTtlOption()),
).action((o: Flags) =>
  runRole(
    'projector',
    () =>
      parseConfig(ProjectorRoleConfigSchema, {
        ...clusterValues(o),
        databaseUrl: o.database ?? (process.env.TUNNOX_DATABASE_URL || undefined),
        health: o.health,
        presenceSweepMs: Number(o.presenceSweep) * 1000,
        anonymousTtlMs: o.anonymousTtl,
      }),
    async (c, logger, lifecycle) => (await import('./roles.js')).runProjector(c, logger, lifecycle),
    (r, logger) => logger.info({ instance: r.instance, health: r.health, metrics: r.metrics }, 'tunnox projector ready'),
  ),
);

transportOptions(clusterOptions(
  program
    .command('edge')
    .description('run an edge alone, from NATS only (no database): agent sessions, tunnels, public ports and the node-to-node bridge')
    .option('--listen-host <host>', 'bind address of every listener: control, public ports, bridge', '0.0.0.0')
    .option('--control-port <port>', 'agent control/tunnel port (0 = any free port)', intArg('--control-port', 0, 65535), DEFAULT_CONTROL_PORT)
    .option('--bridge-port <port>', 'node-to-node bridge port (0 = any free port)', intArg('--bridge-port', 0, 65535), 50052)
    .option('--advertise <host>', 'the address agents and other edges reach this edge at (default: --listen-host, or 127.0.0.1 for a wildcard)')
    .option('--cluster-secret <secret>', 'secret shared by every edge, authenticates the bridge (default: $TUNNOX_CLUSTER_SECRET; without one, tunnels do not cross edges)')
    .option('--node-id <id>', 'fixed node id (default: won from the NATS node registry)')
    .option('--no-anonymous', 'refuse agents without credentials (no anonymous registration)')
    .option('--anonymous-rate <n>', 'anonymous registrations allowed per remote IP per minute', intArg('--anonymous-rate', 0, 100000), 10)
    .option('--max-connections-per-mapping <n>', 'concurrent tunnels of one mapping on this edge, for mappings that set no max_connections', intArg('--max-connections-per-mapping', 1, 1000000), 10000)
    .option('--max-pending-opens-per-mapping <n>', 'visitors of one mapping waiting for the target agent here, for mappings that set no max_pending_opens', intArg('--max-pending-opens-per-mapping', 1, 100000), 256)
    .option('--visitor-rate <n>', 'new visitor connections per second per source IP on public ports (0 = no limit)', intArg('--visitor-rate', 0, 1000000), 100)
    .option('--visitor-burst <n>', 'burst of new visitor connections per source IP on public ports', intArg('--visitor-burst', 1, 1000000), 500)
    .option('--health <host:port>', 'serve GET /healthz on this address')
    .option('--heartbeat-interval <seconds>', 'how often the edge heartbeats an idle agent session (and agents heartbeat it)', intArg('--heartbeat-interval', 1, 3600), 10)
    .option('--heartbeat-timeout <seconds>', 'an agent session silent this long is closed, the agent marked offline and its tunnels reset (agents hold the edge to the same deadline); at most 45', intArg('--heartbeat-timeout', 2, 45), 30)
    .option('--drain-timeout <seconds>', 'on SIGTERM, how long running tunnels may go on (agents move to other edges at once) before they are reset', intArg('--drain-timeout', 0, 3600), 30)
    .option('--data-dir <dir>', 'where a generated TLS certificate is kept', process.env.TUNNOX_DATA_DIR ?? defaultEdgeDataDir()),
)).action((o: Flags) =>
  runRole(
    'edge',
    () =>
      parseConfig(EdgeRoleConfigSchema, {
        ...clusterValues(o),
        listenHost: o.listenHost,
        controlPort: o.controlPort,
        bridgePort: o.bridgePort,
        advertiseHost: o.advertise,
        clusterSecret: o.clusterSecret ?? (process.env.TUNNOX_CLUSTER_SECRET || undefined),
        nodeId: o.nodeId,
        allowAnonymous: o.anonymous !== false,
        anonymousPerMinutePerIp: o.anonymousRate,
        floodLimits: floodLimitValues(o),
        health: o.health,
        drainTimeoutMs: Number(o.drainTimeout) * 1000,
        heartbeatIntervalMs: Number(o.heartbeatInterval) * 1000,
        heartbeatTimeoutMs: Number(o.heartbeatTimeout) * 1000,
        dataDir: o.dataDir,
        ...transportValues(o),
      }),
    async (c, logger, lifecycle) => (await import('./roles.js')).runEdge(c, logger, lifecycle),
    (r, logger) =>
      logger.info({ nodeId: r.nodeId, controlAddress: r.controlAddress, wsAddress: r.wsAddress, fingerprint: r.fingerprint, bridgeAddress: r.bridgeAddress, health: r.health, metrics: r.metrics }, 'tunnox edge ready'),
  ),
);

program
  .command('client')
  .description('run an agent: connect to an edge, receive mapping config, open listeners and dial targets')
  .requiredOption(
    '--server <[scheme://]host[:port][,...]>',
    'edge address: HOST[:PORT] is TLS (port 8080 when omitted), tcp://HOST:PORT plain TCP (the edge must run --allow-plaintext), wss://HOST[:PORT][/PATH] or ws:// WebSocket (path /tunnox); ' +
      'or a comma-separated list of the edges of one cluster: the agent moves to the next one when its edge goes away',
    process.env.TUNNOX_SERVER,
  )
  .option('--fingerprint <sha256:hex>', 'accept only the edge certificate with this SHA-256 fingerprint (the edge prints it at start)', process.env.TUNNOX_FINGERPRINT)
  .option('--ca <file>', 'PEM CA certificate(s) the edge certificate must verify against (default: the system CAs, else trust on first use)', process.env.TUNNOX_CA)
  .option('--known-edges <file>', 'where fingerprints trusted on first use are recorded (default: known_edges beside --credentials)')
  .option('--proxy <url>', 'HTTP proxy (http://[user:pass@]HOST:PORT, CONNECT) for every edge connection (default: $HTTPS_PROXY for TLS and wss, $HTTP_PROXY for tcp and ws, except $NO_PROXY hosts)')
  .option('--client-id <id>', 'managed or previously issued client id', intArg('--client-id', 1, Number.MAX_SAFE_INTEGER))
  .option('--auth-code <code>', 'auth code for --client-id (or $TUNNOX_AUTH_CODE)')
  .option('--credentials <path>', 'where anonymous credentials are saved and reused', process.env.TUNNOX_CREDENTIALS ?? defaultCredentialsPath())
  .option('--health <host:port>', 'serve GET /healthz (200 while connected to an edge, 503 otherwise) on this address')
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default(process.env.TUNNOX_LOG_LEVEL ?? 'info'))
  .action(async (o: { server: string; clientId?: number; authCode?: string; credentials: string; health?: string; logLevel: string; fingerprint?: string; ca?: string; knownEdges?: string; proxy?: string }) => {
    const logger = createLogger({ level: o.logLevel, name: 'tunnox-client' });
    try {
      parseServerList(o.server);
      const authCode = o.authCode ?? (process.env.TUNNOX_AUTH_CODE || undefined);
      if ((o.clientId === undefined) !== (authCode === undefined)) {
        throw new Error('--client-id and --auth-code go together (omit both to use saved or anonymous credentials)');
      }
      if (o.fingerprint !== undefined) parseFingerprint(o.fingerprint);
      if (o.fingerprint !== undefined && o.ca !== undefined) throw new Error('--fingerprint and --ca are two ways to trust the edge: give one');
      const ca = o.ca !== undefined ? await readFile(o.ca, 'utf8').catch((err: unknown) => {
        throw new Error(`cannot read --ca ${o.ca}: ${errorMessage(err)}`);
      }) : undefined;
      const proxy = {
        proxy: o.proxy,
        httpsProxy: process.env.HTTPS_PROXY || process.env.https_proxy || undefined,
        httpProxy: process.env.HTTP_PROXY || process.env.http_proxy || undefined,
        noProxy: process.env.NO_PROXY || process.env.no_proxy || undefined,
      };
      if (o.proxy !== undefined) parseProxyUrl(o.proxy);
      const lifecycle = new Lifecycle(logger);
      lifecycle.installSignalHandlers();
      const { startAgent } = await import('../client/index.js');
      const agent = startAgent({
        server: o.server,
        ...(o.clientId !== undefined ? { clientId: o.clientId } : {}),
        ...(authCode !== undefined ? { authCode } : {}),
        credentialsPath: o.credentials,
        tls: { fingerprint: o.fingerprint, ca, knownEdgesPath: o.knownEdges ?? join(dirname(o.credentials), 'known_edges') },
        proxy,
        logger,
        // Bad credentials or a takeover by another login: retrying would not help, so exit non-zero
        // and let the supervisor (or the person) decide.
        onFatal: () => void lifecycle.close().then(() => process.exit(1)),
      });
      lifecycle.add('agent', () => agent.stop());
      if (o.health) {
        const { host, port } = parseHostPort(o.health);
        const { serveAgentHealth } = await import('../client/health.js');
        const health = await serveAgentHealth(host, port, () => agent.status());
        lifecycle.add('health', () => health.close());
        logger.info({ health: `${host}:${health.port}` }, 'health endpoint listening');
      }
    } catch (err) {
      fail(logger, err);
    }
  });

program.addCommand(ctlCommand());

await program.parseAsync(process.argv);
