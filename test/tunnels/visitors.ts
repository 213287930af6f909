import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import type { Test } from 'tap';
import { sha } from './world.js';

/** Visitor floods for the flood tests (in-process and e2e): bounded in count and in time. */

const PAYLOAD = 2048;

/** An echo service: every byte straight back, FIN for FIN. */
export async function echoService(t: Test): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

export type Outcome = { kind: 'exact' | 'refused' | 'corrupt' | 'timeout'; closedAfterMs: number };

/** One visitor: sends its payload, half-closes, and tells what came back (bounded by `timeoutMs`). */
export function visitor(port: number, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const payload = randomBytes(PAYLOAD);
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let connectedAt = Date.now();
    let settled = false;
    const finish = (kind: Outcome['kind']): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ kind, closedAfterMs: Date.now() - connectedAt });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    s.on('error', () => undefined);
    s.once('connect', () => {
      connectedAt = Date.now();
      s.end(payload);
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    const judge = (): void => {
      const got = Buffer.concat(chunks);
      if (got.length === 0) finish('refused');
      else finish(sha(got) === sha(payload) ? 'exact' : 'corrupt');
    };
    s.once('end', judge);
    s.once('close', judge);
  });
}

/** `n` visitors, all started at once (a few hundred per tick), each bounded by `timeoutMs`. */
export async function flood(port: number, n: number, timeoutMs: number): Promise<Outcome[]> {
  const all: Promise<Outcome>[] = [];
  for (let i = 0; i < n; i++) {
    all.push(visitor(port, timeoutMs));
    if (i % 250 === 249) await new Promise((r) => setImmediate(r));
  }
  return Promise.all(all);
}

export function tally(outcomes: Outcome[]): Record<Outcome['kind'], number> {
  const c = { exact: 0, refused: 0, corrupt: 0, timeout: 0 };
  for (const o of outcomes) c[o.kind]++;
  return c;
}

