// Bridge throughput, against a minimal grpc-js bidi relay of the same shape measured in the same
// run. The callee runs in its own process (like a peer edge); the caller runs here.
//  1. single stream, caller -> callee sink: minimal grpc-js relay (grpc-js defaults, and with the
//     client-side tuning grpc-js allows), our bridge
//     with Node's 64 KiB windows (grpc-js's server default: "before"), our bridge with 4 MiB ("after")
//  2. many streams: N concurrent bridge streams × M MiB echoed back, SHA-256 checked per stream
// Usage: node dist/bench/bridge.js [--mib 128] [--runs 3] [--streams 200] [--stream-mib 4]
import { fork, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Client, credentials, Server, ServerCredentials, type ClientDuplexStream, type ServerDuplexStream } from '@grpc/grpc-js';
import { BridgePool, BridgeServer, MAX_FRAME_PAYLOAD } from '../services/edge/bridge/index.js';
import { bridgeService, type BridgeFrame, type OutFrame } from '../services/edge/bridge/proto.js';
import { median, MiB, numArg } from './lib.js';

const SECRET = 'bench-cluster-secret-0123456789';
type Kind = 'minimal' | 'bridge64k' | 'bridge4m' | 'echo4m';

// ---- callee process -------------------------------------------------------------------------

async function serve(kind: Kind): Promise<number> {
  if (kind === 'minimal') {
    // The least a grpc-js bidi sink can do: count Data frames, answer fin with end.
    const server = new Server();
    server.addService(bridgeService(), {
      Tunnel: (call: ServerDuplexStream<BridgeFrame, OutFrame>) => {
        call.on('data', (f: BridgeFrame) => {
          if (f.kind === 'data' && f.data.fin) call.end();
        });
        call.on('error', () => undefined);
      },
    });
    return new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  }
  const server = new BridgeServer({
    nodeId: 'callee',
    secret: SECRET,
    host: '127.0.0.1',
    port: 0,
    flowControlWindow: kind === 'bridge64k' ? 0 : undefined,
    handler: (_open, stream) => {
      stream.on('error', () => undefined);
      if (kind === 'echo4m') stream.pipe(stream);
      else {
        stream.resume();
        stream.once('end', () => stream.end());
      }
    },
  });
  await server.start();
  return server.port;
}

async function startCallee(kind: Kind): Promise<{ port: number; child: ChildProcess }> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', kind], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve(Number(m)));
    child.once('exit', (c) => reject(new Error(`callee ${kind} exited with ${c}`)));
  });
  return { port, child };
}

// ---- caller ---------------------------------------------------------------------------------

const chunk = randomBytes(MAX_FRAME_PAYLOAD);

/** MB/s for `bytes` over one minimal grpc-js call: 64 KiB Data frames, backpressure via write()/drain. */
async function minimalRun(port: number, bytes: number, tuned = false): Promise<number> {
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1,
    // "tuned": the client-side options grpc-js offers (the callee's window stays at 64 KiB: grpc-js has no server option).
    ...(tuned ? { 'grpc-node.flow_control_window': 4 * MiB, 'grpc.enable_retries': 0 } : {}),
  });
  const def = bridgeService()['Tunnel']!;
  const call = client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize) as ClientDuplexStream<OutFrame, BridgeFrame>;
  const start = performance.now();
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', () => undefined);
    call.once('end', resolve);
    call.once('error', reject);
  });
  let sent = 0;
  while (sent < bytes) {
    sent += chunk.length;
    if (!call.write({ data: { payload: chunk } })) await new Promise((r) => call.once('drain', r));
  }
  call.write({ data: { fin: true } });
  call.end();
  await done;
  const mbs = bytes / MiB / ((performance.now() - start) / 1000);
  client.close();
  return mbs;
}

/** MB/s for `bytes` over one bridge stream from a fresh pool (Open, auth, adapter included). */
async function bridgeRun(port: number, bytes: number, window: number | undefined): Promise<number> {
  const pool = new BridgePool({ nodeId: 'caller', secret: SECRET, flowControlWindow: window });
  const start = performance.now();
  const s = await pool.open(`127.0.0.1:${port}`, { targetNodeId: 'callee', tunnelId: 'bench', mappingId: 1, targetClientId: 1 });
  const done = new Promise<void>((resolve, reject) => {
    s.resume();
    s.once('end', resolve);
    s.once('error', reject);
  });
  const big = Buffer.concat(Array.from({ length: 4 }, () => chunk)); // 256 KiB writes, as a socket pump would
  let sent = 0;
  while (sent < bytes) {
    sent += big.length;
    if (!s.write(big)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await done;
  const mbs = bytes / MiB / ((performance.now() - start) / 1000);
  pool.close();
  return mbs;
}

/** N concurrent echoed streams of `each` bytes; aggregate MB/s (both directions' payload counted once) and SHA-256 matches. */
async function manyStreams(port: number, n: number, each: number): Promise<{ mbs: number; exact: number }> {
  const base = randomBytes(each);
  const baseHash = createHash('sha256').update(base);
  const pool = new BridgePool({ nodeId: 'caller', secret: SECRET, maxConnections: 4, maxStreamsPerConnection: 100 });
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const tag = Buffer.from(`stream-${i}`); // last bytes differ per stream, so a mix-up would show
      const want = baseHash.copy().update(tag).digest('hex');
      const s = await pool.open(`127.0.0.1:${port}`, { targetNodeId: 'callee', tunnelId: `many-${i}`, mappingId: 1, targetClientId: 1 });
      const h = createHash('sha256');
      const got = new Promise<string>((resolve, reject) => {
        s.on('data', (c: Buffer) => h.update(c));
        s.once('end', () => resolve(h.digest('hex')));
        s.once('error', reject);
      });
      for (let off = 0; off < base.length; off += 256 * 1024) {
        if (!s.write(base.subarray(off, off + 256 * 1024))) await new Promise((r) => s.once('drain', r));
      }
      s.end(tag);
      return (await got) === want;
    }),
  );
  const secs = (performance.now() - start) / 1000;
  pool.close();
  return { mbs: (n * each) / MiB / secs, exact: results.filter(Boolean).length };
}

async function main(): Promise<void> {
  const serveIdx = process.argv.indexOf('--serve');
  if (serveIdx > 0) {
    const port = await serve(process.argv[serveIdx + 1] as Kind);
    process.send?.(port);
    process.on('SIGTERM', () => process.exit(0));
    return;
  }
  const bytes = numArg('mib', 128) * MiB;
  const runs = numArg('runs', 3);
  const streams = numArg('streams', 200);
  const streamBytes = numArg('stream-mib', 4) * MiB;
  const callees = {
    minimal: await startCallee('minimal'),
    bridge64k: await startCallee('bridge64k'),
    bridge4m: await startCallee('bridge4m'),
    echo4m: await startCallee('echo4m'),
  };
  try {
    const xs: Record<'minimal' | 'tuned' | 'b64' | 'b4m', number[]> = { minimal: [], tuned: [], b64: [], b4m: [] };
    await minimalRun(callees.minimal.port, 16 * MiB); // warm-up (JIT, connections)
    await bridgeRun(callees.bridge4m.port, 16 * MiB, undefined);
    // Interleaved, so drift in machine load hits all three alike.
    for (let r = 0; r < runs; r++) {
      xs.minimal.push(await minimalRun(callees.minimal.port, bytes));
      xs.tuned.push(await minimalRun(callees.minimal.port, bytes, true));
      xs.b64.push(await bridgeRun(callees.bridge64k.port, bytes, 0));
      xs.b4m.push(await bridgeRun(callees.bridge4m.port, bytes, undefined));
    }
    const line = (label: string, v: number[]): number => {
      const m = median(v);
      process.stdout.write(`${label.padEnd(48)} ${m.toFixed(0).padStart(6)} MB/s   (runs: ${v.map((x) => x.toFixed(0)).join(', ')})\n`);
      return m;
    };
    process.stdout.write(`single stream, caller -> callee sink, ${bytes / MiB} MiB × ${runs} runs (median)\n`);
    const minimal = line('minimal grpc-js bidi relay (grpc-js defaults)', xs.minimal);
    const tuned = line('minimal relay, client 4 MiB window, no retries', xs.tuned);
    const b64 = line('bridge, 64 KiB HTTP/2 windows (before)', xs.b64);
    const b4m = line('bridge, 4 MiB HTTP/2 windows (after)', xs.b4m);
    process.stdout.write(`ratio bridge(4 MiB) / minimal relay: ${(b4m / minimal).toFixed(2)}   (goal >= 0.85)\n`);
    process.stdout.write(`ratio bridge(4 MiB) / tuned minimal relay: ${(b4m / tuned).toFixed(2)}\n`);
    process.stdout.write(`ratio bridge(4 MiB) / bridge(64 KiB): ${(b4m / b64).toFixed(2)}\n`);
    const many = await manyStreams(callees.echo4m.port, streams, streamBytes);
    process.stdout.write(
      `many streams: ${streams} × ${streamBytes / MiB} MiB echoed: ${many.mbs.toFixed(0)} MB/s aggregate, ${many.exact}/${streams} byte-exact\n`,
    );
    if (many.exact !== streams) process.exitCode = 1;
  } finally {
    for (const c of Object.values(callees)) c.child.kill('SIGTERM');
  }
}

await main();
