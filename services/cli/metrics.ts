import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ApiMetrics } from '../api/index.js';
import type { EdgeMetrics, EdgeStats, TunnelKind } from '../edge/index.js';
import { bridgeWindowStalls } from '../edge/bridge/index.js';
import { WrongExpectedRevisionError } from '../../shared/eventstore/errors.js';
import type { AppendResult, EventStore } from '../../shared/eventstore/types.js';
import { listen } from '../../shared/net/listen.js';
import { InfrastructureError, errorMessage } from '../../shared/platform/errors.js';
import type { Lifecycle } from '../../shared/platform/lifecycle.js';
import type { Logger } from '../../shared/platform/logger.js';
import { VERSION } from './version.js';

/*
 * Prometheus metrics of one process (`tunnox server`, `api`, `projector`, `edge`): one registry
 * per process, served on GET /metrics of its own listener (--metrics-host/--metrics-port), never
 * on the Management API's port. The components report through small hook interfaces
 * (services/edge/metrics.ts, ApiDeps.metrics) and are read at scrape time where a snapshot
 * exists (edge stats, bridge pool, projector position); none of them imports prom-client.
 *
 * Every series and what it means is listed in docs/operations.md ("Metrics"); the Grafana
 * dashboard (infra/grafana/tunnox.json) is tested against METRIC_NAMES.
 */

export type Role = 'server' | 'api' | 'projector' | 'edge';

/** Seconds: config push round trips and API requests (a command waits up to 5 s for its projection). */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds: one event append (a JetStream publish ack, a PostgreSQL insert). */
const APPEND_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** A scrape never waits longer than this for the event log (projector lag); the gauges are then left out. */
const LAG_SAMPLE_TIMEOUT_MS = 2_000;

/** What a projector exposes for its lag: RunningProjector from services/projector. */
interface ProjectorSource {
  readonly name: string;
  readonly position: number;
}

interface LagSample {
  head: number;
  /** occurred_at of the oldest event after the projector's position, if any. */
  oldestPendingMs: number | undefined;
  position: number;
}

export class TunnoxMetrics implements EdgeMetrics, ApiMetrics {
  readonly registry = new Registry();
  private readonly edges = new Set<{ stats(): EdgeStats }>();
  private readonly pools = new Set<{ peerStats(): { address: string; connections: number; streams: number }[] }>();
  private readonly projectors = new Map<string, { source: ProjectorSource; store: EventStore; sample?: Promise<LagSample | undefined>; sampledAt?: number }>();

  private readonly tunnelsOpened: Counter<'kind'>;
  private readonly tunnelsActive: Gauge<'kind'>;
  private readonly tunnelsFailed: Counter<'code'>;
  private readonly tunnelBytes: Counter<'kind' | 'direction'>;
  private readonly configPush: Histogram<'kind' | 'outcome'>;
  private readonly apiRequests: Histogram<'method' | 'route' | 'status_code'>;
  readonly appendDuration: Histogram<'store' | 'outcome'>;

  constructor(readonly role: Role) {
    const all = [this.registry];
    // Each role exports only its own families (`tunnox server` all of them): a dashboard panel
    // then shows which processes play a part, not a row of zeros from every process.
    const runs = (...roles: Role[]): Registry[] => (role === 'server' || roles.includes(role) ? all : []);
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'tunnox_build_info', help: 'Always 1; the labels say which version runs in which role', labelNames: ['version', 'role'], registers: all }).set(
      { version: VERSION, role },
      1,
    );

    // Edge. Bytes are counted when a tunnel ends (the pump returns its counts then): a tunnel that
    // runs for an hour adds its bytes at the end of that hour.
    let registers = runs('edge');
    this.tunnelsOpened = new Counter({ name: 'tunnox_edge_tunnels_opened_total', help: 'Tunnels whose two sides were joined, by kind of visitor side (client, public, bridge)', labelNames: ['kind'], registers });
    this.tunnelsActive = new Gauge({ name: 'tunnox_edge_tunnels_active', help: 'Tunnels running now, by kind of visitor side', labelNames: ['kind'], registers });
    this.tunnelsFailed = new Counter({ name: 'tunnox_edge_tunnels_failed_total', help: 'Tunnels that never started, by wire error code (target offline, timeout, refused by the target...)', labelNames: ['code'], registers });
    this.tunnelBytes = new Counter({
      name: 'tunnox_edge_tunnel_bytes_total',
      help: 'Bytes carried by tunnels that ended, by kind and direction (to_target: from the visitor side to the target agent; to_visitor: back)',
      labelNames: ['kind', 'direction'],
      registers,
    });
    this.configPush = new Histogram({
      name: 'tunnox_edge_config_push_duration_seconds',
      help: 'From sending a config push (full or delta) to the agent until its answer (or the timeout)',
      labelNames: ['kind', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const edges = this.edges;
    const sum = (pick: (s: EdgeStats) => number): number => {
      let n = 0;
      for (const e of edges) n += pick(e.stats());
      return n;
    };
    const snapshotGauge = (name: string, help: string, pick: (s: EdgeStats) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          if (edges.size > 0) this.set(sum(pick));
        },
      });
    };
    const snapshotCounter = (name: string, help: string, pick: (s: EdgeStats) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          // The edge keeps the running total; a counter can only be raised, so restate it.
          this.reset();
          if (edges.size > 0) this.inc(sum(pick));
        },
      });
    };
    snapshotGauge('tunnox_edge_agents_connected', 'Agents with a control session on this edge (draining sessions not counted)', (s) => s.sessions);
    snapshotGauge('tunnox_edge_public_listeners', 'Public TCP ports this edge listens on', (s) => s.publicListeners);
    snapshotCounter('tunnox_edge_credential_checks_total', 'Auth-code verifications (scrypt) run by this edge', (s) => s.credentialChecks);
    snapshotCounter('tunnox_edge_session_token_logins_total', 'Agent logins accepted with a session token', (s) => s.tokenLogins);
    snapshotCounter('tunnox_edge_session_tokens_rejected_total', 'Session tokens refused (forged, expired, revoked)', (s) => s.tokensRejected);

    // Bridge (node-to-node) pool of this edge, per peer edge.
    const pools = this.pools;
    const perPeer = (pick: (p: { connections: number; streams: number }) => number) =>
      function (this: Gauge<'peer'>): void {
        this.reset();
        const byPeer = new Map<string, number>();
        for (const pool of pools) for (const p of pool.peerStats()) byPeer.set(p.address, (byPeer.get(p.address) ?? 0) + pick(p));
        for (const [peer, n] of byPeer) this.set({ peer }, n);
      };
    new Gauge({ name: 'tunnox_bridge_pool_connections', help: 'Bridge connections (HTTP/2) this edge holds to each peer edge', labelNames: ['peer'], registers, collect: perPeer((p) => p.connections) });
    new Gauge({ name: 'tunnox_bridge_pool_streams', help: 'Tunnel streams open on this edge\'s bridge connections, per peer edge', labelNames: ['peer'], registers, collect: perPeer((p) => p.streams) });
    new Counter({
      name: 'tunnox_bridge_window_stalls_total',
      help: 'Bridge stream flow-control stalls: send = a write waited for the peer\'s window; receive = a frame found the reader behind and paused the stream',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        if (pools.size === 0) return; // no bridge in this process
        this.inc({ direction: 'send' }, bridgeWindowStalls.send);
        this.inc({ direction: 'receive' }, bridgeWindowStalls.receive);
      },
    });

    // Projector: where it is and how far behind the event log.
    registers = runs('projector');
    const projectors = this.projectors;
    const lagGauge = (name: string, help: string, value: (s: LagSample) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['projection'],
        registers,
        async collect() {
          this.reset();
          for (const [projection, p] of projectors) {
            const s = await sampleLag(p);
            if (s) this.set({ projection }, value(s));
          }
        },
      });
    lagGauge('tunnox_projector_position', 'Position of the last event the projector committed', (s) => s.position);
    lagGauge('tunnox_projector_lag_events', 'Events in the log after the projector\'s position (head minus position; positions may have gaps)', (s) => Math.max(0, s.head - s.position));
    lagGauge('tunnox_projector_lag_seconds', 'Age of the oldest event the projector has not applied yet (0 when caught up)', (s) =>
      s.oldestPendingMs === undefined ? 0 : Math.max(0, (Date.now() - s.oldestPendingMs) / 1000),
    );

    this.apiRequests = new Histogram({
      name: 'tunnox_api_request_duration_seconds',
      help: 'Management API requests, by method, route pattern and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: LATENCY_BUCKETS,
      registers: runs('api'),
    });
    // Every role appends: the API its commands, edges session facts, the projector's sweeper closes sessions.
    this.appendDuration = new Histogram({
      name: 'tunnox_eventstore_append_duration_seconds',
      help: 'One event append, by store (jetstream, postgres) and outcome (ok, duplicate, conflict, error)',
      labelNames: ['store', 'outcome'],
      buckets: APPEND_BUCKETS,
      registers: all,
    });
  }

  tunnelOpened(kind: TunnelKind): void {
    this.tunnelsOpened.inc({ kind });
    this.tunnelsActive.inc({ kind });
  }

  tunnelClosed(kind: TunnelKind, bytesToTarget: number, bytesToVisitor: number): void {
    this.tunnelsActive.dec({ kind });
    this.tunnelBytes.inc({ kind, direction: 'to_target' }, bytesToTarget);
    this.tunnelBytes.inc({ kind, direction: 'to_visitor' }, bytesToVisitor);
  }

  tunnelFailed(code: string): void {
    this.tunnelsFailed.inc({ code });
  }

  configPushAnswered(kind: 'full' | 'delta', outcome: 'applied' | 'not_applied', seconds: number): void {
    this.configPush.observe({ kind, outcome }, seconds);
  }

  requestAnswered(method: string, route: string, statusCode: number, seconds: number): void {
    this.apiRequests.observe({ method, route, status_code: String(statusCode) }, seconds);
  }

  /** Reads the edge's gauges (agents connected, public listeners) and login counters at each scrape. */
  watchEdge(edge: { stats(): EdgeStats }): void {
    this.edges.add(edge);
  }

  watchBridgePool(pool: { peerStats(): { address: string; connections: number; streams: number }[] }): void {
    this.pools.add(pool);
  }

  /** Lag of a running projector against `store` (the event log it follows), sampled at scrape time. */
  watchProjector(projector: ProjectorSource, store: EventStore): void {
    this.projectors.set(projector.name, { source: projector, store });
  }

  /** The same event store, with every append timed into tunnox_eventstore_append_duration_seconds. */
  instrumentEventStore(store: EventStore): EventStore {
    return new TimedEventStore(store, this.appendDuration);
  }
}

/** One sample per projector for all lag gauges of a scrape (they collect concurrently); undefined if the log did not answer. */
function sampleLag(p: { source: ProjectorSource; store: EventStore; sample?: Promise<LagSample | undefined>; sampledAt?: number }): Promise<LagSample | undefined> {
  const now = Date.now();
  if (p.sample && p.sampledAt !== undefined && now - p.sampledAt < 1_000) return p.sample;
  p.sampledAt = now;
  const position = p.source.position;
  const read = (async (): Promise<LagSample> => {
    const head = await p.store.headPosition();
    const next = head > position ? (await p.store.readAll(position, 1))[0] : undefined;
    return { head, position, oldestPendingMs: next ? Date.parse(next.occurred_at) : undefined };
  })();
  let timer: NodeJS.Timeout | undefined;
  p.sample = Promise.race([read, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), LAG_SAMPLE_TIMEOUT_MS)))])
    .catch(() => undefined)
    .finally(() => clearTimeout(timer));
  return p.sample;
}

/**
 * Times appends and passes everything else through. Every other method forwards its arguments as
 * they are (rest parameters), so an option added to the interface later is not silently dropped.
 */
class TimedEventStore implements EventStore {
  readonly kind: EventStore['kind'];

  constructor(
    private readonly inner: EventStore,
    private readonly histogram: Histogram<'store' | 'outcome'>,
  ) {
    this.kind = inner.kind;
  }

  async append(...args: Parameters<EventStore['append']>): Promise<AppendResult> {
    const end = this.histogram.startTimer({ store: this.kind });
    try {
      const r = await this.inner.append(...args);
      end({ outcome: r.duplicate ? 'duplicate' : 'ok' });
      return r;
    } catch (err) {
      end({ outcome: err instanceof WrongExpectedRevisionError ? 'conflict' : 'error' });
      throw err;
    }
  }

  readStream(...args: Parameters<EventStore['readStream']>): ReturnType<EventStore['readStream']> {
    return this.inner.readStream(...args);
  }

  readLastEvent(...args: Parameters<EventStore['readLastEvent']>): ReturnType<EventStore['readLastEvent']> {
    return this.inner.readLastEvent(...args);
  }

  readAll(...args: Parameters<EventStore['readAll']>): ReturnType<EventStore['readAll']> {
    return this.inner.readAll(...args);
  }

  headPosition(): Promise<number> {
    return this.inner.headPosition();
  }

  subscribe(...args: Parameters<EventStore['subscribe']>): ReturnType<EventStore['subscribe']> {
    return this.inner.subscribe(...args);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * GET /metrics in the Prometheus text format; anything else is a 404. No authentication: bind it
 * to loopback (the default) or to an address only the scraper reaches.
 */
export async function serveMetrics(host: string, port: number, registry: Registry): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${errorMessage(err)}\n`),
    );
  });
  server.requestTimeout = 5_000;
  server.headersTimeout = 5_000;
  const addr = await listen(server, { host, port }).catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InfrastructureError(
      'TNX_METRICS_LISTEN',
      `cannot serve metrics on ${host}:${port}: ${errorMessage(err)}` +
        (code === 'EADDRINUSE' ? '; another process (another tunnox role?) uses it: give each process its own --metrics-port, or --metrics-port 0 to turn metrics off' : ''),
      { cause: err },
    );
  });
  server.on('error', () => undefined); // a bound listener's later errors are per connection
  return {
    port: addr.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `--metrics-host` / `--metrics-port` of every role; port 0 turns metrics off. */
export interface MetricsConfig {
  metricsHost: string;
  metricsPort: number;
}

/**
 * The process's metrics and their listener (registered with the lifecycle), or undefined when
 * `--metrics-port 0` turned them off: then nothing is counted at all.
 */
export async function startMetrics(
  config: MetricsConfig,
  role: Role,
  logger: Logger,
  lifecycle: Lifecycle,
): Promise<{ metrics: TunnoxMetrics; address: string } | undefined> {
  if (config.metricsPort === 0) return undefined;
  const metrics = new TunnoxMetrics(role);
  const server = await serveMetrics(config.metricsHost, config.metricsPort, metrics.registry);
  lifecycle.add('metrics', () => server.close());
  const address = `${config.metricsHost.includes(':') ? `[${config.metricsHost}]` : config.metricsHost}:${server.port}`;
  logger.info({ metrics: `http://${address}/metrics` }, 'metrics endpoint listening');
  return { metrics, address };
}

/** Every metric name a scrape can show besides the default process_ and nodejs_ ones (the dashboard test checks against these). */
export function metricNames(registry: Registry): string[] {
  return registry.getMetricsAsArray().map((m) => m.name);
}
