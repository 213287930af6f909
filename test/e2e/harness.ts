import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as natsConnect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { freePort } from '../../shared/net/listen.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
export { freePort };

/** Repository root (this file is compiled to dist/test/e2e/harness.js). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const TUNNOX_BIN = join(ROOT, 'bin', 'tunnox.js');

export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `${prefix}-`));
  // As root the embedded PostgreSQL runs as a system user that must be able to enter this folder.
  await chmod(path, 0o711);
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface Proc {
  child: ChildProcess;
  /** Every stdout/stderr line so far (pino JSON lines and the human banner). */
  lines: string[];
  /** Resolves with the first parsed JSON log line matching `pred` (bounded by timeoutMs). */
  waitForLog(pred: (entry: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, then the exit code (SIGKILL after timeoutMs). */
  stop(timeoutMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

/** `where` runs another copy of the built tree (its root: bin/tunnox.js is run from there, in there). */
export function spawnTunnox(args: string[], env: Record<string, string> = {}, where = ROOT): Proc {
  const child = spawn(process.execPath, [join(where, 'bin', 'tunnox.js'), ...args], {
    cwd: where,
    // Metrics off unless a test asks (--metrics-port wins over the environment): every role's
    // default port is 9090, and tests run many processes at once.
    env: { ...process.env, TUNNOX_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { pred: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] = [];
  const onLine = (line: string): void => {
    lines.push(line);
    if (!line.startsWith('{')) return;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    for (const w of [...waiters]) {
      if (w.pred(entry)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(entry);
      }
    }
  };
  for (const stream of [child.stdout!, child.stderr!]) {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    waitForLog(pred, timeoutMs = 30_000) {
      for (const line of lines) {
        try {
          const e = JSON.parse(line) as Record<string, unknown>;
          if (pred(e)) return Promise.resolve(e);
        } catch {
          /* not JSON */
        }
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`timed out waiting for a log line; last lines:\n${lines.slice(-20).join('\n')}`));
        }, timeoutMs);
        const w = {
          pred,
          resolve: (e: Record<string, unknown>) => {
            clearTimeout(timer);
            resolve(e);
          },
        };
        waiters.push(w);
        void exited.then((code) => {
          if (waiters.includes(w)) {
            clearTimeout(timer);
            reject(new Error(`process exited (${code}) before the expected log line; last lines:\n${lines.slice(-20).join('\n')}`));
          }
        });
      });
    },
    async stop(timeoutMs = 20_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

export interface ServerHandle {
  proc: Proc;
  apiUrl: string;
  controlPort: number;
  /** The edge certificate's fingerprint, as the server printed it. */
  fingerprint: string;
  apiKey: string;
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

/** `env`: extra environment of the server process (the benchmarks' NODE_OPTIONS, for one). */
export async function startServer(args: string[], apiKey: string, env: Record<string, string> = {}): Promise<ServerHandle> {
  // No WebSocket port unless a test asks for one (--ws-port given later wins): 8081 is one port for the whole machine.
  const proc = spawnTunnox(['server', '--api-port', '0', '--control-port', '0', '--ws-port', '0', '--control-host', '127.0.0.1', '--public-host', '127.0.0.1', '--api-key', apiKey, ...args], env);
  const ready = await proc.waitForLog((e) => e.msg === 'tunnox server ready', 60_000).catch(async (err: unknown) => {
    await proc.stop(); // nothing left running behind a failed start
    throw err;
  });
  const apiUrl = String(ready.apiUrl);
  const controlPort = Number(String(ready.controlAddress).split(':').pop());
  return {
    proc,
    apiUrl,
    controlPort,
    fingerprint: String(ready.fingerprint),
    apiKey,
    api: apiClient(apiUrl, apiKey),
  };
}

/** A Management API caller with the admin key: JSON in, `{status, body}` out. */
export function apiClient(apiUrl: string, apiKey: string): ServerHandle['api'] {
  return async (method, path, body) => {
    const res = await fetch(apiUrl + path, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
}

export interface StreamEnd {
  how: 'end' | 'reset';
  /** Bytes received before the end. */
  bytes: number;
  code?: string;
}

/**
 * How a socket's peer ended the stream, told apart as the tunnel's local peer must: a reset
 * ('error', ECONNRESET or EPIPE) or a clean FIN. A Node receiver may report a reset that arrives
 * together with unread bytes as an 'end' (libuv reports EOF on POLLHUP after a partial read), so
 * after an 'end' one probe byte is written: it fails on a reset connection and goes through on a
 * half-closed one. For streams expected to be reset (the probe byte reaches a clean peer).
 */
export function streamEnd(socket: Socket): Promise<StreamEnd> {
  let bytes = 0;
  socket.on('data', (c: Buffer) => {
    bytes += c.length;
  });
  socket.resume();
  return new Promise((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ how: 'reset', bytes, ...(err.code ? { code: err.code } : {}) }));
    socket.once('end', () => socket.write(Buffer.from([0]), (err) => (err ? undefined : resolve({ how: 'end', bytes }))));
  });
}

/** Deletes a JetStream-mode run's streams: events, `<stream>_CFG`, and the KV buckets of its prefix (`stream` lower-cased). */
export async function deleteStreams(stream: string): Promise<void> {
  const nc = await natsConnect({ servers: TEST_NATS_URL });
  try {
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      if (s.config.name.startsWith(stream) || s.config.name.startsWith(`KV_${stream.toLowerCase()}`)) await jsm.streams.delete(s.config.name);
    }
  } finally {
    await nc.close();
  }
}

/**
 * `tunnox server` arguments for node `n` of a JetStream-mode cluster on one stream and database:
 * the bridge on a free port, and every public port on the node's own loopback address (every
 * server opens every public port).
 */
export function clusterServerArgs(o: { dataDir: string; database: string; stream: string; secret: string }, n: number): string[] {
  return [
    '--data-dir', join(o.dataDir, `s${n}`), '--nats', TEST_NATS_URL, '--database', o.database, '--stream', o.stream, '--subject-prefix', o.stream.toLowerCase(),
    '--cluster-secret', o.secret, '--bridge-port', '0', '--public-host', `127.0.0.${n}`,
  ];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every 50 ms until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false | null>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`);
}

export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const ID_LEN = 16;

/**
 * A target service for transfer tests: each connection starts with a 16-byte id; the server sends
 * `size` random bytes back while it receives, ends its side after the peer's FIN (half-close), and
 * records SHA-256 of everything received and sent per id.
 */
export async function startTransferTarget(size: number): Promise<{
  port: number;
  results: Map<string, { received: string; sent: string; receivedBytes: number }>;
  close(): Promise<void>;
}> {
  const results = new Map<string, { received: string; sent: string; receivedBytes: number }>();
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const inHash = createHash('sha256');
    let idBuf = Buffer.alloc(0);
    let receivedBytes = 0;
    const payload = randomBytes(size);
    const sent = createHash('sha256').update(payload).digest('hex');
    let wroteAll = false;
    let gotEnd = false;
    const finish = (): void => {
      if (wroteAll && gotEnd) socket.end();
    };
    socket.on('data', (chunk: Buffer) => {
      receivedBytes += chunk.length;
      inHash.update(chunk);
      if (idBuf.length < ID_LEN) idBuf = Buffer.concat([idBuf, chunk.subarray(0, ID_LEN - idBuf.length)]);
    });
    socket.on('end', () => {
      results.set(idBuf.toString('hex'), { received: inHash.digest('hex'), sent, receivedBytes });
      gotEnd = true;
      finish();
    });
    socket.on('error', () => undefined);
    // Send concurrently with receiving: both directions are busy at once.
    socket.write(payload, () => {
      wroteAll = true;
      finish();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return {
    port: addr && typeof addr === 'object' ? addr.port : 0,
    results,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export interface TransferResult {
  id: string;
  sent: string;
  received: string;
  receivedBytes: number;
}

/** One visitor connection: sends id + `size` random bytes, half-closes, reads until the peer ends. */
export function transfer(port: number, size: number, timeoutMs = 120_000, host = '127.0.0.1'): Promise<TransferResult> {
  return new Promise((resolve, reject) => {
    const id = randomBytes(ID_LEN);
    const payload = Buffer.concat([id, randomBytes(size)]);
    const sent = createHash('sha256').update(payload).digest('hex');
    const inHash = createHash('sha256');
    let receivedBytes = 0;
    const socket = connect({ port, host, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`transfer on port ${port} timed out after ${receivedBytes} bytes received`));
    }, timeoutMs);
    socket.on('connect', () => {
      socket.end(payload);
    });
    socket.on('data', (chunk: Buffer) => {
      receivedBytes += chunk.length;
      inHash.update(chunk);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      socket.end();
      resolve({ id: id.toString('hex'), sent, received: inHash.digest('hex'), receivedBytes });
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface HeldTransfer {
  id: string;
  /** SHA-256 of everything this visitor sends (id included). */
  sentSha: string;
  /** Resolves once bytes flow back (at least 1 MiB arrived), or the connection ended first. */
  started: Promise<void>;
  /** Sends the second half of the upload and half-closes. */
  release(): void;
  /** How the connection ended, with what arrived until then. */
  ended: Promise<{ how: 'end' | 'reset'; code?: string; received: number; sha: string }>;
  /**
   * For an 'end' seen before release(): tells a reset from a real FIN. Node may report a reset that
   * arrives with unread bytes as an 'end' (see streamEnd); one more byte fails on a reset connection.
   */
  probe(): Promise<'reset' | 'open'>;
}

/**
 * Like transfer(), but the upload stops half-way until release(): the tunnel stays open, carrying
 * the service's bytes back meanwhile, for as long as a test needs it running.
 */
export function heldTransfer(port: number, half: number, host = '127.0.0.1'): HeldTransfer {
  const id = randomBytes(ID_LEN);
  const payload = Buffer.concat([id, randomBytes(2 * half)]);
  const split = ID_LEN + half;
  const socket = connect({ host, port, allowHalfOpen: true });
  const inHash = createHash('sha256');
  let received = 0;
  let released = false;
  let flowing!: () => void;
  const started = new Promise<void>((r) => (flowing = r));
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    inHash.update(chunk);
    if (received >= 1024 * 1024) flowing();
  });
  const ended = new Promise<{ how: 'end' | 'reset'; code?: string; received: number; sha: string }>((resolve) => {
    socket.once('end', () => {
      // Before release() the writable side stays open, so probe() can still write.
      if (released) socket.end();
      resolve({ how: 'end', received, sha: inHash.digest('hex') });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ how: 'reset', ...(err.code ? { code: err.code } : {}), received, sha: '' }));
  });
  socket.write(payload.subarray(0, split));
  return {
    id: id.toString('hex'),
    sentSha: createHash('sha256').update(payload).digest('hex'),
    started: Promise.race([started, ended.then(() => undefined)]),
    release: () => {
      released = true;
      socket.end(payload.subarray(split));
    },
    ended,
    probe: () =>
      new Promise((resolve) => {
        if (socket.destroyed) return resolve('reset');
        socket.once('error', () => resolve('reset'));
        socket.write(Buffer.from([0]), (err) => {
          resolve(err ? 'reset' : 'open');
          socket.destroy();
        });
      }),
  };
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** GET http://<address>/metrics, parsed (the text format as prom-client writes it: no timestamps, escaped label values). */
export async function scrape(address: string): Promise<Sample[]> {
  const res = await fetch(`http://${address}/metrics`);
  if (res.status !== 200) throw new Error(`GET ${address}/metrics: ${res.status}`);
  const samples: Sample[] = [];
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels` (0 when there is none). */
export function metricValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);
}

/** Scrapes `address` until `ready` holds for the samples (e.g. a tunnel is counted once both its sockets closed). */
export function scrapeUntil(address: string, what: string, ready: (s: Sample[]) => boolean, timeoutMs = 20_000): Promise<Sample[]> {
  return eventually(what, async () => {
    const s = await scrape(address);
    return ready(s) ? s : undefined;
  }, timeoutMs);
}
