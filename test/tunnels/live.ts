import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import type { Test } from 'tap';

/**
 * A transfer that is still running when a test acts on its tunnel: the service streams bytes to
 * the visitor for as long as the connection lives (honouring backpressure), and the visitor keeps
 * reading. Neither side ever ends on its own, so whatever ends the tunnel is what the test did.
 */

export interface StreamingService {
  port: number;
  /** How each accepted connection ended: 'reset' (ECONNRESET/EPIPE...), 'end' (a FIN) or 'open'. */
  outcomes: Promise<'end' | 'reset'>[];
}

const CHUNK = randomBytes(64 * 1024);

export async function startStreamingService(t: Test, host = '127.0.0.1'): Promise<StreamingService> {
  const outcomes: Promise<'end' | 'reset'>[] = [];
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    outcomes.push(
      new Promise((resolve) => {
        s.once('error', () => resolve('reset'));
        s.once('end', () => resolve('end'));
        s.once('close', () => {
          sockets.delete(s);
          resolve('reset');
        });
      }),
    );
    s.on('data', () => undefined); // the visitor's bytes, if any, are read and dropped
    const pump = (): void => {
      while (!s.destroyed && s.writable && s.write(CHUNK));
    };
    s.on('drain', pump);
    pump();
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as AddressInfo).port, outcomes };
}

export interface LiveVisitor {
  /** Resolves once 1 MiB has arrived (the tunnel carries bytes); rejects if it ended before. */
  flowing: Promise<void>;
  /** How and when the visitor's connection ended, with the bytes received until then. */
  ended: Promise<{ how: 'end' | 'reset'; at: number; received: number }>;
  received(): number;
  close(): void;
}

/** Connects and reads forever, never ending its side: only the tunnel's teardown ends it. */
export function liveVisitor(port: number, host = '127.0.0.1'): LiveVisitor {
  const socket = connect({ host, port, allowHalfOpen: true });
  let received = 0;
  let flowing!: () => void;
  let notFlowing!: (err: Error) => void;
  const started = new Promise<void>((resolve, reject) => {
    flowing = resolve;
    notFlowing = reject;
  });
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received >= 1024 * 1024) flowing();
  });
  const ended = new Promise<{ how: 'end' | 'reset'; at: number; received: number }>((resolve) => {
    let settled = false;
    const done = (how: 'end' | 'reset', at = Date.now()): void => {
      if (settled) return;
      settled = true;
      notFlowing(new Error(`the transfer ended (${how}) after ${received} bytes, before it was flowing`));
      resolve({ how, at, received });
    };
    socket.once('end', () => {
      // Node reports a reset that meets unread bytes as an 'end' (libuv): one more byte tells them
      // apart, since a write to a reset connection fails (EPIPE) while a half-closed one takes it.
      const at = Date.now();
      socket.once('error', () => done('reset', at));
      socket.write(Buffer.from([0]), (err) => done(err ? 'reset' : 'end', at));
    });
    socket.on('error', () => done('reset'));
    socket.once('close', () => done('reset'));
  });
  // Keep the promise from counting as unhandled when a test only awaits `ended`.
  started.catch(() => undefined);
  return { flowing: started, ended, received: () => received, close: () => socket.destroy() };
}
