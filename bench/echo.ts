// Small request/response through a client-to-client mapping, per transport, against a chain of
// minimal Node relays with the same number of user-space hops, all in one run.
//
// A client-to-client tunnel crosses three processes: the source agent (listening on the mapping's
// local port), the edge, and the target agent (dialing the service). The baseline is three
// bench/relay.js processes in a row in front of the same echo service. Each connection sends
// 64 bytes and waits for their echo before sending the next (one request in flight per
// connection), for `--seconds` per measurement, with 1 and with 50 connections. Paths are
// measured in turn within each round, so drift on a shared machine hits all of them alike.
// Reported: round trips per second (median over rounds), p50/p99 latency of every round trip.
//
// Then tunnel open latency: connect → first echoed byte on a fresh connection (the source agent
// opens its tunnel connection, the edge asks the target agent, which dials the service and opens
// its own: over TLS, two handshakes per open), per transport and through the relay chain.
//
// Usage: node dist/bench/echo.js [--transport tcp,tls,ws,wss] [--seconds 3] [--rounds 3] [--opens 200] [--conns 1,50]
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, tempDir } from '../test/e2e/harness.js';
import { median, numArg, percentile, runBench, startPortProcess, startRelayProcess, strArg, UsageError, type PortProcess } from './lib.js';
import { startBenchServer, transportsArg, type BenchServer } from './tunnox.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const MESSAGE = Buffer.alloc(64, 0x61);

interface Path {
  label: string;
  port: number;
}

/** Opens one connection and completes one exchange on it (so the tunnel behind it is up). */
async function openWarm(port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no echo through port ${port} within 10 s`)), 10_000);
    let got = 0;
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got < MESSAGE.length) return;
      clearTimeout(timer);
      s.off('data', onData);
      resolve();
    };
    s.on('data', onData);
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.write(MESSAGE);
  });
  return s;
}

interface RrResult {
  /** Round trips per second over all connections. */
  rate: number;
  /** Latency of every round trip, ms. */
  latencies: number[];
}

/** `conns` connections, each ping-ponging 64 bytes for `seconds`. */
async function requestResponse(port: number, conns: number, seconds: number): Promise<RrResult> {
  const sockets = await Promise.all(Array.from({ length: conns }, () => openWarm(port)));
  const latencies: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  let trips = 0;
  try {
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve, reject) => {
            let got = 0;
            let sentAt = performance.now();
            s.on('data', (c: Buffer) => {
              got += c.length;
              if (got < MESSAGE.length) return;
              got -= MESSAGE.length;
              const now = performance.now();
              latencies.push(now - sentAt);
              trips++;
              if (now >= end) {
                resolve();
                return;
              }
              sentAt = now;
              s.write(MESSAGE);
            });
            s.once('error', reject);
            s.once('close', () => reject(new Error(`connection through port ${port} closed mid-measurement`)));
            s.write(MESSAGE);
          }),
      ),
    );
  } finally {
    for (const s of sockets) s.destroy();
  }
  return { rate: trips / ((performance.now() - start) / 1000), latencies };
}

/** ms from connect() to the first echoed byte of a fresh connection. */
function openLatency(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const s = connect({ host: '127.0.0.1', port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo through port ${port} within 10 s`));
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

const fmt = (x: number, w = 8, d = 2): string => x.toFixed(d).padStart(w);

async function main(): Promise<void> {
  const transports = transportsArg();
  const seconds = numArg('seconds', 3);
  const rounds = numArg('rounds', 3);
  const opens = numArg('opens', 200);
  const connCounts = (strArg('conns') ?? '1,50').split(',').map(Number);
  if (connCounts.some((c) => !Number.isInteger(c) || c < 1 || c > 1000)) throw new UsageError('--conns: comma-separated integers from 1 to 1000');

  const helpers: PortProcess[] = [];
  const dir = await tempDir('tnx-bench-echo');
  let bench: BenchServer | undefined;
  try {
    const echo = await startPortProcess(join(here, 'echo-server.js'));
    helpers.push(echo);
    const r3 = await startRelayProcess(join(here, 'relay.js'), echo.port);
    const r2 = await startRelayProcess(join(here, 'relay.js'), r3.port);
    const r1 = await startRelayProcess(join(here, 'relay.js'), r2.port);
    helpers.push(r3, r2, r1);

    bench = await startBenchServer({ dir: dir.path, transports });
    const paths: Path[] = [{ label: 'relay chain (3 Node relays)', port: r1.port }];
    for (const t of transports) {
      const source = await bench.agent(`echo-source-${t}`, t);
      const target = await bench.agent(`echo-target-${t}`, t);
      const localPort = await freePort();
      await bench.clientMapping(source, target, echo.port, localPort);
      paths.push({ label: `tunnox client-to-client, ${t}`, port: localPort });
    }

    process.stdout.write(
      `echo: 64-byte request/response, one in flight per connection, ${seconds} s per measurement, ${rounds} rounds, paths in turn per round\n` +
        `(tunnox: source agent -> edge -> target agent, 3 processes; baseline: 3 minimal Node relays; transports: ${transports.join(', ')})\n`,
    );
    for (const p of paths) await requestResponse(p.port, 4, 0.5); // warm-up (JIT, pools)

    const results = new Map<string, { rates: number[]; latencies: number[] }>();
    const key = (p: Path, conns: number): string => `${p.label}/${conns}`;
    for (let r = 0; r < rounds; r++) {
      for (const conns of connCounts) {
        for (const p of paths) {
          const res = await requestResponse(p.port, conns, seconds);
          const acc = results.get(key(p, conns)) ?? { rates: [], latencies: [] };
          acc.rates.push(res.rate);
          for (const l of res.latencies) acc.latencies.push(l);
          results.set(key(p, conns), acc);
        }
      }
    }
    for (const conns of connCounts) {
      process.stdout.write(`\n${`${conns} connection${conns === 1 ? '' : 's'}:`.padEnd(40)} ${'trips/s'.padStart(10)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}   / relay chain\n`);
      const base = median(results.get(key(paths[0]!, conns))!.rates);
      for (const p of paths) {
        const acc = results.get(key(p, conns))!;
        const rate = median(acc.rates);
        process.stdout.write(
          `  ${p.label.padEnd(38)} ${fmt(rate, 10, 0)} ${fmt(percentile(acc.latencies, 50))} ${fmt(percentile(acc.latencies, 99))}   ${fmt(rate / base, 5)}x` +
            `   (runs: ${acc.rates.map((x) => x.toFixed(0)).join(', ')})\n`,
        );
      }
      const tls = results.get(`tunnox client-to-client, tls/${conns}`);
      if (tls) process.stdout.write(`  ratio tls / relay chain, ${conns} conn: ${(median(tls.rates) / base).toFixed(2)}x   (goal >= 0.7x)\n`);
    }

    process.stdout.write(`\n${`tunnel open, connect -> first echoed byte, ${opens} opens per path, in turn:`.padEnd(54)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}\n`);
    for (const p of paths) await openLatency(p.port);
    const lat = new Map(paths.map((p) => [p.label, [] as number[]]));
    for (let i = 0; i < opens; i++) for (const p of paths) lat.get(p.label)!.push(await openLatency(p.port));
    for (const p of paths) {
      const xs = lat.get(p.label)!;
      process.stdout.write(`  ${p.label.padEnd(52)} ${fmt(percentile(xs, 50))} ${fmt(percentile(xs, 99))}\n`);
    }
    const plain = lat.get('tunnox client-to-client, tcp');
    for (const t of transports.filter((t) => t !== 'tcp')) {
      const xs = lat.get(`tunnox client-to-client, ${t}`)!;
      if (plain) {
        process.stdout.write(
          `  ${t} open / tcp open: p50 ${(percentile(xs, 50) / percentile(plain, 50)).toFixed(2)}x, p99 ${(percentile(xs, 99) / percentile(plain, 99)).toFixed(2)}x` +
            ` (adds ${(percentile(xs, 50) - percentile(plain, 50)).toFixed(2)} / ${(percentile(xs, 99) - percentile(plain, 99)).toFixed(2)} ms)\n`,
        );
      }
    }
  } finally {
    await bench?.stop();
    for (const h of helpers) h.stop();
    await dir.remove();
  }
}

await runBench(main);
