// Memory per idle tunnel, per transport, against a minimal Node relay holding as many
// connections, all in one run.
//
// For each N (default 5000 and 9000) and each transport, a fresh `tunnox server` and one target
// agent connected over that transport serve a public mapping to an echo service (its own
// process). The bench opens N visitor connections to the public port (`--batch` at a time), each
// sending one byte and waiting for its echo so the whole tunnel is up, and then leaves them idle.
// A tunnel holds two sockets on the edge (visitor, agent's tunnel connection) and two on the
// agent (tunnel connection, service), so N = 9000 needs about 18000 fds in each: within the usual
// 20000 limit (`ulimit -n`). The baseline is bench/relay.js (accept, dial, pipe) holding N
// connections the same way: two sockets each, in one process.
//
// Measured from outside over the inspector (the processes run with --inspect=127.0.0.1:0, no
// bench code inside them): a full GC, a pause, another GC, then process.memoryUsage() before the
// N connections (after a warm-up of `--warmup` connections opened and closed, so code and pools
// are in place) and with the N connections open. Per tunnel = (after − before) / N, for RSS (all
// user-space memory of the process: V8 heap, Buffers, OpenSSL and libuv allocations) and for the
// V8 heap alone. Kernel socket buffers are not in RSS and not counted. Every process is fresh per
// measurement, so memory freed by one measurement is never reused by the next.
//
// Usage: node dist/bench/memory.js [--transport tcp,tls,ws,wss] [--n 5000,9000] [--batch 100]
//        [--warmup 200] [--snapshots DIR (heap snapshots of every measured process with N open and after they closed, for profiling)]
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually, tempDir } from '../test/e2e/harness.js';
import { connectInspector, inspectorUrl, type Inspector, type MemoryUsage } from './inspector.js';
import { numArg, runBench, startPortProcess, startRelayProcess, strArg, UsageError, type PortProcess } from './lib.js';
import { startBenchServer, transportsArg, type BenchServer, type Transport } from './tunnox.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const KiB = 1024;
const INSPECT = '--inspect=127.0.0.1:0';

/** Opens one connection to `port` and waits for the echo of one byte: the path behind it is up. */
function openIdle(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo through port ${port} within 30 s`));
    }, 30_000);
    s.once('data', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', () => undefined); // a reset while idle shows up as a missing echo in the check below
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.write('x');
  });
}

/** `n` idle connections, `batch` opening at a time. */
async function openMany(port: number, n: number, batch: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  try {
    for (let i = 0; i < n; i += batch) {
      const opened = await Promise.allSettled(Array.from({ length: Math.min(batch, n - i) }, () => openIdle(port)));
      for (const r of opened) if (r.status === 'fulfilled') sockets.push(r.value);
      const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw new Error(`connection ${sockets.length + 1} of ${n}: ${String(failed.reason)}`);
    }
  } catch (err) {
    for (const s of sockets) s.destroy();
    throw err;
  }
  return sockets;
}

/** After the measurement: every connection still carries bytes end to end (none was dropped while idle). */
async function checkAlive(sockets: Socket[], batch: number): Promise<number> {
  let alive = 0;
  for (let i = 0; i < sockets.length; i += batch) {
    const results = await Promise.all(
      sockets.slice(i, i + batch).map(
        (s) =>
          new Promise<boolean>((resolve) => {
            if (s.destroyed) return resolve(false);
            const timer = setTimeout(() => resolve(false), 10_000);
            s.once('data', () => {
              clearTimeout(timer);
              resolve(true);
            });
            s.write('y');
          }),
      ),
    );
    alive += results.filter(Boolean).length;
  }
  return alive;
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** GC, pause (V8 gives pages back off the main thread), GC, read. */
async function settledUsage(i: Inspector): Promise<MemoryUsage> {
  await i.gc();
  await settle(500);
  await i.gc();
  return i.memoryUsage();
}

/** The soft limit on open files of this process (children inherit it), from /proc/self/limits. */
function fdLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function inspect(lines: readonly string[], what: string): Promise<Inspector> {
  const url = await eventually(`${what}: inspector URL on stderr`, async () => inspectorUrl(lines), 10_000);
  return connectInspector(url);
}

/**
 * Profiling (--snapshots): a heap snapshot of each process with the N connections open, then one
 * after they closed (the base to diff against). Taken after the figures were read: a snapshot
 * grows the process it is taken in.
 */
async function snapshotPair(dir: string, sockets: Socket[], of: [Inspector, string][]): Promise<void> {
  for (const [i, name] of of) await i.heapSnapshot(join(dir, `${name}-open.heapsnapshot`));
  for (const s of sockets) s.destroy();
  await settle(2000);
  for (const [i, name] of of) {
    await i.gc();
    await i.heapSnapshot(join(dir, `${name}-closed.heapsnapshot`));
  }
}

interface Measured {
  label: string;
  n: number;
  /** Per connection / tunnel, bytes: RSS, V8 heap in use, V8 heap committed, memory outside the V8 heap that V8 knows of (Buffers, TLS). */
  rss: number;
  heap: number;
  heapTotal: number;
  external: number;
  /** Open fds with the N connections (a check that they are really held). */
  fds: number;
}

interface Row {
  transport: Transport | 'relay';
  n: number;
  edge: Measured;
  agent?: Measured;
  alive: number;
}

function perTunnel(label: string, n: number, before: MemoryUsage, after: MemoryUsage, fds: number): Measured {
  const d = (k: keyof MemoryUsage): number => (after[k] - before[k]) / n;
  return { label, n, rss: d('rss'), heap: d('heapUsed'), heapTotal: d('heapTotal'), external: d('external'), fds };
}

async function measureRelay(echoPort: number, n: number, batch: number, warmup: number, snapshots: string | undefined): Promise<Row> {
  const relay = await startRelayProcess(join(here, 'relay.js'), echoPort, [], [INSPECT]);
  const insp = await inspect(relay.lines, 'relay');
  try {
    for (const s of await openMany(relay.port, warmup, batch)) s.destroy();
    await settle(500);
    const before = await settledUsage(insp);
    const sockets = await openMany(relay.port, n, batch);
    try {
      await settle(1000);
      const after = await settledUsage(insp);
      const fds = fdCount(relay.child.pid!);
      const alive = await checkAlive(sockets, batch);
      if (snapshots) await snapshotPair(snapshots, sockets, [[insp, `relay-${n}`]]);
      return { transport: 'relay', n, edge: perTunnel('relay', n, before, after, fds), alive };
    } finally {
      for (const s of sockets) s.destroy();
    }
  } finally {
    insp.close();
    relay.stop();
  }
}

async function measureTunnox(transport: Transport, echoPort: number, n: number, batch: number, warmup: number, snapshots: string | undefined): Promise<Row> {
  const dir = await tempDir('tnx-bench-memory');
  let bench: BenchServer | undefined;
  const inspectors: Inspector[] = [];
  try {
    const env = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${INSPECT}`.trim() };
    bench = await startBenchServer({ dir: dir.path, transports: [transport], env });
    const agent = await bench.agent(`memory-${transport}`, transport, env);
    const port = await bench.publicMapping(agent, echoPort);
    const edgeI = await inspect(bench.server.proc.lines, 'edge');
    const agentI = await inspect(agent.proc.lines, 'agent');
    inspectors.push(edgeI, agentI);

    for (const s of await openMany(port, warmup, batch)) s.destroy();
    await settle(1000); // the warm-up tunnels close on both sides
    const [edgeBefore, agentBefore] = await Promise.all([settledUsage(edgeI), settledUsage(agentI)]);
    const sockets = await openMany(port, n, batch);
    try {
      await settle(1000);
      const [edgeAfter, agentAfter] = await Promise.all([settledUsage(edgeI), settledUsage(agentI)]);
      const edgeFds = fdCount(bench.pid);
      const agentFds = fdCount(agent.proc.child.pid!);
      const alive = await checkAlive(sockets, batch);
      if (snapshots) await snapshotPair(snapshots, sockets, [[edgeI, `edge-${transport}-${n}`], [agentI, `agent-${transport}-${n}`]]);
      return {
        transport,
        n,
        edge: perTunnel('edge', n, edgeBefore, edgeAfter, edgeFds),
        agent: perTunnel('agent', n, agentBefore, agentAfter, agentFds),
        alive,
      };
    } finally {
      for (const s of sockets) s.destroy();
    }
  } finally {
    for (const i of inspectors) i.close();
    await bench?.stop();
    await dir.remove();
  }
}

const kib = (b: number): string => (b / KiB).toFixed(1).padStart(7);

async function main(): Promise<void> {
  const transports = transportsArg();
  const ns = (strArg('n') ?? '5000,9000').split(',').map(Number);
  if (ns.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError('--n: comma-separated positive integers');
  const batch = numArg('batch', 100);
  const warmup = numArg('warmup', 200);
  const snapshots = strArg('snapshots');
  // The edge and the agent each hold two sockets per tunnel, plus listeners, pools and the like.
  const need = 2 * Math.max(...ns) + 200;
  if (fdLimit() < need) throw new UsageError(`--n ${Math.max(...ns)} needs about ${need} open files per process; ulimit -n is ${fdLimit()}: raise it (ulimit -n ${need}) or lower --n`);

  process.stdout.write(
    `memory: N idle tunnels through a public mapping (visitor -> edge -> target agent -> echo), per transport, against a minimal Node relay holding N connections\n` +
      `per tunnel = (RSS with N open - RSS before) / N, each after a full GC, read over the inspector; a fresh process per measurement; KiB\n`,
  );
  const echo: PortProcess = await startPortProcess(join(here, 'echo-server.js'));
  const rows: Row[] = [];
  try {
    for (const n of ns) {
      rows.push(await measureRelay(echo.port, n, batch, warmup, snapshots));
      for (const t of transports) rows.push(await measureTunnox(t, echo.port, n, batch, warmup, snapshots));
    }
  } finally {
    echo.stop();
  }

  process.stdout.write(`\n${'N'.padStart(6)}  ${'process'.padEnd(12)} ${'RSS'.padStart(7)} ${'heap'.padStart(7)} ${'heapTot'.padStart(7)} ${'extern'.padStart(7)}   ${'/ relay'.padStart(7)}   ${'fds'.padStart(6)}   alive   (KiB per tunnel; heap = V8 heap in use, heapTot = committed)\n`);
  for (const n of ns) {
    const relay = rows.find((r) => r.n === n && r.transport === 'relay')!;
    for (const r of rows.filter((x) => x.n === n)) {
      const line = (label: string, m: Measured): void => {
        process.stdout.write(
          `${String(n).padStart(6)}  ${label.padEnd(12)} ${kib(m.rss)} ${kib(m.heap)} ${kib(m.heapTotal)} ${kib(m.external)}   ${(m.rss / relay.edge.rss).toFixed(2).padStart(6)}x   ${String(m.fds).padStart(6)}   ${r.alive}/${n}\n`,
        );
      };
      line(r.transport === 'relay' ? 'node relay' : `edge ${r.transport}`, r.edge);
      if (r.agent) line(`agent ${r.transport}`, r.agent);
      if (r.alive !== n) process.exitCode = 1;
    }
  }
  for (const n of ns) {
    const relay = rows.find((r) => r.n === n && r.transport === 'relay')!;
    const tcp = rows.find((r) => r.n === n && r.transport === 'tcp');
    const tls = rows.find((r) => r.n === n && r.transport === 'tls');
    if (tcp) process.stdout.write(`N=${n}: plain edge / relay: ${(tcp.edge.rss / relay.edge.rss).toFixed(2)}x   (goal <= 1.0x)\n`);
    if (tls) process.stdout.write(`N=${n}: TLS edge: ${(tls.edge.rss / KiB).toFixed(1)} KiB per tunnel   (goal <= 35 KiB)\n`);
  }
}

await runBench(main);
