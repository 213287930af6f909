// Shared pieces of the bridge tests: real servers and pools on 127.0.0.1, nothing mocked.
import type { Test } from 'tap';
import { createHash } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeSockets } from '../../shared/net/pipe.js';
import { BridgePool, BridgeServer, type BridgeHandler, type BridgeOpen, type BridgePoolOptions, type BridgeServerOptions } from '../../services/edge/bridge/index.js';

export const MiB = 1024 * 1024;
export const SECRET = 'test-cluster-secret-0123456789';

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP echo service (half-close aware: it ends after echoing everything once the peer ended). */
export async function startEcho(t: Test): Promise<number> {
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as AddressInfo).port;
}

/** The callee's side as the edge will do it: dial the local target over TCP and pump. */
export function echoHandler(echoPort: number, calls: BridgeOpen[] = []): BridgeHandler {
  return async (open, stream) => {
    calls.push(open);
    const target = connect({ host: '127.0.0.1', port: echoPort, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      target.once('connect', resolve);
      target.once('error', reject);
    });
    void pipeSockets(stream, target);
  };
}

export async function startBridge(t: Test, o: Partial<BridgeServerOptions> & { handler: BridgeHandler }): Promise<BridgeServer> {
  const server = new BridgeServer({ nodeId: 'node-b', secret: SECRET, host: '127.0.0.1', port: 0, ...o });
  await server.start();
  t.teardown(() => server.close());
  return server;
}

export function newPool(t: Test, o: Partial<BridgePoolOptions> = {}): BridgePool {
  const pool = new BridgePool({ nodeId: 'node-a', secret: SECRET, ...o });
  t.teardown(() => pool.close());
  return pool;
}

let tunnelSeq = 0;
export const openReq = (tunnelId = `t-${++tunnelSeq}`) => ({ targetNodeId: 'node-b', tunnelId, mappingId: 7, targetClientId: 42 });

/** Everything a readable delivers until 'end'; rejects if it errors instead (a reset). */
export function collect(s: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** How a stream's peer went away: a clean end or a reset (error). */
export function fate(s: Duplex): Promise<{ how: 'end' } | { how: 'error'; err: Error & { code?: string } }> {
  s.resume();
  return new Promise((resolve) => {
    s.once('end', () => resolve({ how: 'end' }));
    s.once('error', (err: Error & { code?: string }) => resolve({ how: 'error', err }));
  });
}

/** Writes `data` honouring backpressure, then ends. */
export async function writeAll(s: Duplex, data: Buffer, chunk = 256 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
}
