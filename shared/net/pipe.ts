import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface PipeResult {
  readonly bytesAtoB: number;
  readonly bytesBtoA: number;
  /** The first error seen on either side, if the pipe ended abnormally. */
  readonly error: Error | undefined;
}

export interface PipeOptions {
  /**
   * Asked when `a` ends (FIN): true passes the FIN on to `b`, false resets both. For a side whose
   * FIN alone does not prove a complete stream (a killed process's kernel sends FIN too). Called
   * at most once, off the byte path; without it a FIN is passed on at once.
   */
  confirmEndOfA?: () => Promise<boolean>;
  /** The same for `b`'s FIN, passed on to `a`. */
  confirmEndOfB?: () => Promise<boolean>;
}

/**
 * Ends `s` with a reset, never a FIN: a TCP socket sends RST (one still connecting is just
 * destroyed), another byte Duplex is destroyed before its end, which is its reset.
 */
export function resetStream(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof Socket && !s.connecting) s.resetAndDestroy();
  else s.destroy();
}

/**
 * The one byte pump. Copies bytes both ways between two connected sockets until both directions
 * are done, and owns both sockets from the moment it is called (it destroys them when finished).
 * Either side may also be another byte Duplex that keeps these semantics (the bridge's
 * BridgeStream): there, destroy() before both directions ended is its reset.
 *
 * - Backpressure: `stream.pipe` pauses a reader whose peer's write buffer is full.
 * - Half-close: when one side ends (FIN), the other side's write half is ended and the reverse
 *   direction keeps flowing. Both sockets must be created with `allowHalfOpen: true`, otherwise
 *   Node would end the write half on its own as soon as the read half ends.
 * - Errors: an error or an abrupt close on either side resets both at once (no half-dead pairs).
 *   A reset, not a FIN: a peer must never mistake a truncated stream (say, an upload cut off by a
 *   crashed visitor) for a complete one.
 *
 * Bytes already read before the hand-off (e.g. a decoder's remainder) must be written to the
 * other side by the caller before calling this, so ordering is preserved.
 */
export function pipeSockets(a: Duplex, b: Duplex, o: PipeOptions = {}): Promise<PipeResult> {
  return new Promise((resolve) => {
    let bytesAtoB = 0;
    let bytesBtoA = 0;
    let error: Error | undefined;
    let closed = 0;

    const countA = (chunk: Buffer): void => {
      bytesAtoB += chunk.length;
    };
    const countB = (chunk: Buffer): void => {
      bytesBtoA += chunk.length;
    };
    const abort = (): void => {
      resetStream(a);
      resetStream(b);
    };
    const onError = (err: Error): void => {
      error ??= err;
      abort();
    };
    const onClose = (socket: Duplex): void => {
      // A clean close means the socket both received and sent FIN, so its peer's remaining bytes
      // were already handed over and the peer will close by itself once they are flushed.
      // Anything else (reset, destroy, error) leaves the peer with nobody to talk to.
      if (!(socket.readableEnded && socket.writableFinished)) abort();
      if (++closed === 2) {
        a.off('data', countA);
        b.off('data', countB);
        resolve({ bytesAtoB, bytesBtoA, error });
      }
    };

    /** Passes `from`'s FIN on to `to`, once `confirm` (if any) vouches for it. */
    const forwardEnd = (from: Duplex, to: Duplex, confirm: (() => Promise<boolean>) | undefined): void => {
      let asked = false;
      const onEnd = (): void => {
        if (asked) return;
        asked = true;
        if (!confirm) {
          to.end();
          return;
        }
        confirm().then(
          (ok) => (ok ? to.end() : abort()),
          () => abort(),
        );
      };
      // pipe() only forwards an 'end' it sees; one that already happened must be forwarded here.
      if (from.readableEnded) onEnd();
      else from.once('end', onEnd);
    };

    // The 'end' forwarding is ours, not pipe()'s, so it can wait for a confirmation; the data path
    // is plain pipe() with nothing added per chunk.
    a.pipe(b, { end: false });
    b.pipe(a, { end: false });
    forwardEnd(a, b, o.confirmEndOfA);
    forwardEnd(b, a, o.confirmEndOfB);
    a.on('data', countA);
    b.on('data', countB);
    a.on('error', onError);
    b.on('error', onError);
    for (const s of [a, b]) {
      // Handed an already closed socket: its 'close' event is gone, count it now.
      if (s.closed) queueMicrotask(() => onClose(s));
      else s.once('close', () => onClose(s));
    }
  });
}
