// Cluster forwarding, against baselines measured in the same run. A cluster of role processes
// (projector, api, two edges on 127.0.0.1 and 127.0.0.2); the target agent sits on edge 1 and
// serves two public mappings (a sink and an echo service).
//  1. single-stream throughput to the sink: same-edge (visitor -> edge 1 -> agent), cross-edge
//     (visitor -> edge 2 -> bridge -> edge 1 -> agent), and a minimal grpc-js bidi relay of the same
//     shape (visitor -> TCP->gRPC hop -> gRPC->TCP hop -> TCP relay -> sink: three processes, as the
//     cross-edge path has edge 2, edge 1 and the agent). Interleaved runs, medians.
//  2. tunnel open latency, connect -> first echoed byte, same-edge vs cross-edge, interleaved.
//  3. many streams: N concurrent cross-edge tunnels x M MiB echoed, SHA-256 checked per stream.
// Usage: node dist/bench/cluster.js [--mib 256] [--runs 3] [--opens 200] [--streams 200] [--stream-mib 4]
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect, eventually, spawnTunnox, tempDir, type Proc } from '../test/e2e/harness.js';
import { startCluster } from '../test/e2e/cluster-harness.js';
import { measureTransfer, median, MiB, numArg, percentile, startRelayProcess, startSink } from './lib.js';

const here = fileURLToPath(new URL('.', import.meta.url));

async function startEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => new Promise((r) => server.close(() => r())) };
}

/** ms from connect() to the first echoed byte of a fresh connection. */
function openLatency(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const s = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo from ${host}:${port} within 10 s`));
    }, 10_000);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      clearTimeout(timer);
      resolve(performance.now() - start);
      s.destroy();
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** One echoed stream: `payload` out, the same bytes back; resolves with whether they matched. */
function echoed(host: string, port: number, payload: Buffer): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const want = createHash('sha256').update(payload).digest('hex');
    const h = createHash('sha256');
    const s = connect({ host, port, allowHalfOpen: true, noDelay: true });
    s.on('data', (c: Buffer) => h.update(c));
    s.once('end', () => {
      s.end();
      resolve(h.digest('hex') === want);
    });
    s.once('error', reject);
    s.once('connect', () => s.end(payload));
  });
}

async function main(): Promise<void> {
  const bytes = numArg('mib', 256) * MiB;
  const runs = numArg('runs', 3);
  const opens = numArg('opens', 200);
  const streams = numArg('streams', 200);
  const streamBytes = numArg('stream-mib', 4) * MiB;
  const sink = await startSink();
  const echo = await startEcho();
  const cluster = await startCluster({ edges: ['127.0.0.1', '127.0.0.2'], name: 'tnx_bench_cluster' }).catch(async (err: unknown) => {
    await sink.close();
    await echo.close();
    throw err;
  });
  const dir = await tempDir('tnx-bench-cluster');
  const procs: Proc[] = [];
  const relays: Awaited<ReturnType<typeof startRelayProcess>>[] = [];
  try {
    const [e1, e2] = cluster.edges as [(typeof cluster.edges)[0], (typeof cluster.edges)[0]];
    const user = (await cluster.api('POST', '/api/v1/users', { username: 'bench', email: 'bench@example.com' })).body.user_id as number;
    const client = (await cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: 'bench-target' })).body;
    procs.push(
      spawnTunnox(['client', '--server', e1.controlAddress, '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'c.json'), '--log-level', 'warn']),
    );
    await eventually('agent online', async () => (await cluster.api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);
    const publicMapping = async (port: number): Promise<number> => {
      const m = await cluster.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: client.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: port });
      const p = Number(m.body.public_port);
      for (const e of [e1, e2]) await eventually(`public port ${p} on ${e.host}`, () => canConnect(p, e.host), 30_000);
      return p;
    };
    const sinkPort = await publicMapping(sink.port);
    const echoPort = await publicMapping(echo.port);
    // The baseline: TCP -> gRPC -> TCP -> relay -> sink, each hop its own process.
    const hopC = await startRelayProcess(join(here, 'relay.js'), sink.port);
    const hopB = await startRelayProcess(join(here, 'grpc-relay.js'), hopC.port, ['out']);
    const hopA = await startRelayProcess(join(here, 'grpc-relay.js'), hopB.port, ['in']);
    relays.push(hopA, hopB, hopC);

    process.stdout.write(`cluster: 2 edges + agent, single TCP stream, ${bytes / MiB} MiB x ${runs} runs (median), interleaved\n`);
    for (const [host, port] of [[e1.host, sinkPort], [e2.host, sinkPort], ['127.0.0.1', hopA.port]] as const) await measureTransfer(port, sink, 32 * MiB, host); // warm-up
    const xs = { same: [] as number[], cross: [] as number[], minimal: [] as number[] };
    for (let r = 0; r < runs; r++) {
      xs.same.push(await measureTransfer(sinkPort, sink, bytes, e1.host));
      xs.cross.push(await measureTransfer(sinkPort, sink, bytes, e2.host));
      xs.minimal.push(await measureTransfer(hopA.port, sink, bytes));
    }
    const line = (label: string, v: number[]): number => {
      const m = median(v);
      process.stdout.write(`${label.padEnd(52)} ${m.toFixed(0).padStart(6)} MB/s   (runs: ${v.map((x) => x.toFixed(0)).join(', ')})\n`);
      return m;
    };
    const same = line('same-edge (edge 1 -> agent)', xs.same);
    const cross = line('cross-edge (edge 2 -> bridge -> edge 1 -> agent)', xs.cross);
    const minimal = line('minimal grpc-js bidi relay, same shape (3 processes)', xs.minimal);
    process.stdout.write(`ratio cross-edge / same-edge: ${(cross / same).toFixed(2)}   (goal >= 0.5)\n`);
    process.stdout.write(`ratio cross-edge / minimal grpc-js relay: ${(cross / minimal).toFixed(2)}   (goal >= 0.85)\n`);

    const lat = { same: [] as number[], cross: [] as number[] };
    for (let i = 0; i < 10; i++) await openLatency(e2.host, echoPort); // warm the bridge pool
    for (let i = 0; i < opens; i++) {
      lat.same.push(await openLatency(e1.host, echoPort));
      lat.cross.push(await openLatency(e2.host, echoPort));
    }
    const p = (v: number[], q: number): string => percentile(v, q).toFixed(2).padStart(7);
    process.stdout.write(`tunnel open, connect -> first echoed byte, ${opens} opens each (ms):   p50     p99\n`);
    process.stdout.write(`  same-edge                                             ${p(lat.same, 50)} ${p(lat.same, 99)}\n`);
    process.stdout.write(`  cross-edge                                            ${p(lat.cross, 50)} ${p(lat.cross, 99)}\n`);
    process.stdout.write(
      `cross-edge adds: p50 ${(percentile(lat.cross, 50) - percentile(lat.same, 50)).toFixed(2)} ms, p99 ${(percentile(lat.cross, 99) - percentile(lat.same, 99)).toFixed(2)} ms   (goal <= 5 ms at p99)\n`,
    );

    const base = randomBytes(streamBytes);
    const start = performance.now();
    const results = await Promise.all(
      Array.from({ length: streams }, (_, i) => echoed(e2.host, echoPort, Buffer.concat([base, Buffer.from(`stream-${i}`)]))),
    );
    const secs = (performance.now() - start) / 1000;
    const exact = results.filter(Boolean).length;
    process.stdout.write(
      `many streams: ${streams} concurrent cross-edge tunnels x ${streamBytes / MiB} MiB echoed: ${((streams * streamBytes) / MiB / secs).toFixed(0)} MB/s aggregate (each way), ${exact}/${streams} byte-exact\n`,
    );
    if (exact !== streams) process.exitCode = 1;
  } finally {
    for (const r of relays) r.stop();
    await Promise.all(procs.map((p) => p.stop()));
    await cluster.close();
    await sink.close();
    await echo.close();
    await dir.remove();
  }
}

await main();
