import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { apiClient, deleteStreams, freePort, spawnTunnox, type Proc } from './harness.js';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A cluster of role processes on one machine, as an operator runs it: one `tunnox projector`, one
 * `tunnox api` and N `tunnox edge` on 127.0.0.1, 127.0.0.2, 127.0.0.3 … (each edge binds all its
 * listeners to its own address). Own database, stream and subject prefix per cluster; `close()`
 * stops every process and removes them. Edges get no database URL, not even through the
 * environment.
 */
export interface EdgeHandle {
  proc: Proc;
  host: string;
  controlPort: number;
  nodeId: string;
  /** `host:port` agents use. */
  controlAddress: string;
  args: string[];
  /** `host:port` of GET /metrics, with `metrics: true`. */
  metrics: string | undefined;
  /** The SHA-256 fingerprint of the edge's TLS certificate, from its ready line. */
  fingerprint: string;
}

export interface ClusterHandle {
  stream: string;
  prefix: string;
  secret: string;
  databaseUrl: string;
  projector: Proc;
  apiProc: Proc;
  apiUrl: string;
  /** `host:port` of the projector's and the API's GET /metrics, with `metrics: true`. */
  projectorMetrics: string | undefined;
  apiMetrics: string | undefined;
  apiKey: string;
  edges: EdgeHandle[];
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Starts (another) edge on `host`; extra flags after the defaults. */
  startEdge(host: string, extra?: string[]): Promise<EdgeHandle>;
  close(): Promise<void>;
}

/** The environment of a child without any database or NATS URL the parent may carry. */
function cleanEnv(): Record<string, string> {
  return { TUNNOX_DATABASE_URL: '', TUNNOX_NATS_URL: '', TUNNOX_LOG_LEVEL: 'info' };
}

/**
 * `metrics`: every process serves GET /metrics on a free port of its own host (off otherwise, as
 * spawnTunnox leaves it).
 */
export async function startCluster(opts: { edges: string[]; name?: string; edgeArgs?: string[]; projectorArgs?: string[]; metrics?: boolean }): Promise<ClusterHandle> {
  const database = await createTestDatabase(opts.name ?? 'tnx_cluster', false);
  const stream = uniqueName('TNX_CL').toUpperCase();
  const prefix = stream.toLowerCase();
  const secret = `cluster-secret-${stream}`;
  const apiKey = `cluster-admin-key-${stream}`;
  const common = ['--nats', TEST_NATS_URL, '--stream', stream, '--subject-prefix', prefix];
  const procs: Proc[] = [];
  const metricsArgs = async (host: string): Promise<string[]> => (opts.metrics ? ['--metrics-host', host, '--metrics-port', String(await freePort(host))] : []);
  let edgeCount = 0;
  const dataDirs: string[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop()));
    await Promise.all(dataDirs.map((d) => rm(d, { recursive: true, force: true })));
    await deleteStreams(stream);
    await database.drop();
  };
  try {
    const projector = spawnTunnox(['projector', ...common, '--database', database.url, ...(await metricsArgs('127.0.0.1')), ...(opts.projectorArgs ?? [])], cleanEnv());
    procs.push(projector);
    const projectorReady = await projector.waitForLog((e) => e.msg === 'tunnox projector ready', 60_000);
    const apiProc = spawnTunnox(['api', ...common, '--database', database.url, '--api-port', '0', '--api-key', apiKey, ...(await metricsArgs('127.0.0.1'))], cleanEnv());
    procs.push(apiProc);
    const apiReady = await apiProc.waitForLog((e) => e.msg === 'tunnox api ready', 60_000);
    const apiUrl = String(apiReady.apiUrl);
    const startEdge = async (host: string, extra: string[] = []): Promise<EdgeHandle> => {
      // Each edge its own data dir (its generated TLS certificate) and no WebSocket port unless asked.
      const dataDir = join(tmpdir(), `${stream.toLowerCase()}-edge-${++edgeCount}`);
      dataDirs.push(dataDir);
      const args = ['edge', ...common, '--listen-host', host, '--control-port', '0', '--ws-port', '0', '--bridge-port', '0', '--data-dir', dataDir, '--cluster-secret', secret, ...(await metricsArgs(host)), ...(opts.edgeArgs ?? []), ...extra];
      const proc = spawnTunnox(args, cleanEnv());
      procs.push(proc);
      const ready = await proc.waitForLog((e) => e.msg === 'tunnox edge ready', 60_000);
      const controlAddress = String(ready.controlAddress);
      const metrics = typeof ready.metrics === 'string' ? ready.metrics : undefined;
      return { proc, host, controlPort: Number(controlAddress.split(':').pop()), nodeId: String(ready.nodeId), controlAddress, args, metrics, fingerprint: String(ready.fingerprint) };
    };
    const edges: EdgeHandle[] = [];
    for (const host of opts.edges) edges.push(await startEdge(host));
    return {
      stream,
      prefix,
      secret,
      databaseUrl: database.url,
      projector,
      apiProc,
      apiUrl,
      projectorMetrics: typeof projectorReady.metrics === 'string' ? projectorReady.metrics : undefined,
      apiMetrics: typeof apiReady.metrics === 'string' ? apiReady.metrics : undefined,
      apiKey,
      edges,
      startEdge,
      api: apiClient(apiUrl, apiKey),
      close: closeAll,
    };
  } catch (err) {
    await closeAll().catch(() => undefined);
    throw err;
  }
}
