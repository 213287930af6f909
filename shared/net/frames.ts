import type { Conn } from '../transport/conn.js';
import { FrameError, type Frame, type FrameDecoder } from '../wire/codec.js';

/**
 * A byte allowance shared by many connections: the edge caps what all not-yet-authenticated
 * connections together may hold in memory, so a crowd of slow or bogus handshakes costs a
 * bounded amount however many sockets it opens. Each connection takes a lease and returns it
 * when it is classified (or closed).
 */
export class ByteBudget {
  private used = 0;
  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  /**
   * A lease whose first `freeBytes` are not charged: a connection's first bytes cost no more than
   * its socket does anyway, and a budget filled by others never refuses a small handshake.
   */
  lease(freeBytes = 0): BudgetLease {
    let seen = 0;
    let held = 0;
    let released = false;
    return {
      take: (n) => {
        if (released) return false;
        const charge = Math.max(0, seen + n - freeBytes) - Math.max(0, seen - freeBytes);
        if (this.used + charge > this.capacity) return false;
        this.used += charge;
        held += charge;
        seen += n;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        this.used -= held;
        held = 0;
      },
    };
  }
}

export interface BudgetLease {
  /** Accounts for n more bytes; false (nothing taken) when the shared budget cannot cover them. */
  take(n: number): boolean;
  /** Returns everything taken. Idempotent; a released lease takes nothing more. */
  release(): void;
}

/**
 * Reads exactly one frame from a fresh connection (the Handshake or TunnelOpen that decides what
 * the connection is, or the TunnelOpenAck an agent waits for). On success the socket is left
 * paused with no 'data' listener, and anything received after the frame stays in `decoder`
 * unparsed: for a tunnel it is raw payload (`decoder.takeRemainder()`), for a control connection
 * the next frames. Rejects with a FrameError on a violation, a timeout or an early close; the
 * socket is not destroyed (the caller owns it). The caller must keep its own 'error' listener.
 *
 * With a `lease`, every chunk read is charged to it before it is buffered, and a chunk the shared
 * budget cannot cover rejects with TNX_WIRE_BUSY. The caller releases the lease.
 */
export function readFirstFrame(socket: Conn, decoder: FrameDecoder, timeoutMs: number, lease?: BudgetLease): Promise<Frame> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      socket.pause();
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    const onData = (chunk: Buffer): void => {
      if (lease && !lease.take(chunk.length)) {
        done();
        reject(new FrameError('TNX_WIRE_BUSY', 'too many bytes held by unauthenticated connections; try again later'));
        return;
      }
      let frames: Frame[];
      try {
        frames = decoder.push(chunk, 1);
      } catch (err) {
        done();
        reject(err);
        return;
      }
      const frame = frames[0];
      if (frame) {
        done();
        resolve(frame);
      }
    };
    const onEnd = (): void => {
      done();
      reject(new FrameError('TNX_WIRE_CLOSED', 'connection closed before a complete frame arrived'));
    };
    const timer = setTimeout(() => {
      done();
      reject(new FrameError('TNX_WIRE_TIMEOUT', `no complete frame within ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  });
}

/**
 * Ends a connection gracefully: queued writes (e.g. a refusal frame) are flushed before FIN, and
 * incoming bytes are discarded so the peer's FIN can complete the close. A peer that never closes
 * is cut off after `graceMs`.
 */
export function closeAfterFlush(socket: Conn, graceMs = 2_000): void {
  if (socket.destroyed) return;
  socket.removeAllListeners('data');
  socket.on('data', () => undefined);
  socket.end();
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
