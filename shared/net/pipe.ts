import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

export interface PipeResult {
  readonly bytesAtoB: number;
  readonly bytesBtoA: number;
  /** The first error seen on either side, if the pipe ended abnormally. */
  readonly error: Error | undefined;
  /** The pump reset both sides because no byte moved either way for `idleTimeoutMs`. */
  readonly idle: boolean;
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
  /**
   * Resets both sides once no byte was read or written on either for this long (ms; absent or 0:
   * never). A reset, not a FIN: an idle close is not a complete stream. Bytes count as activity
   * when they move through a socket, so a direction stalled by backpressure for that long (its
   * reader not reading) counts as idle too.
   */
  idleTimeoutMs?: number;
}

/**
 * Ends `s` with a reset, never a FIN: a TCP socket sends RST (one still connecting is just
 * destroyed), and so does a TLS socket, through the TCP socket below it (a TLS socket's own handle
 * cannot reset); another byte Duplex is destroyed before its end, which is its reset.
 */
export function resetStream(s: Duplex): void {
  if (s.destroyed) return;
  // The TCP socket a TLS socket was made over (tls.connect({socket}), or the server's accepted one).
  const tcp: unknown = s instanceof TLSSocket ? (s as TLSSocket & { _parent?: unknown })._parent : s;
  // Not after end(): libuv refuses a close-with-reset while the socket's shutdown (our FIN) is in
  // progress (uv_tcp_close_reset: EINVAL) and Node then never closes the handle, which leaks the fd
  // and keeps the process from ever exiting. The FIN is already on its way then; destroy() is all.
  const ended = s.writableEnded || (tcp instanceof Socket && tcp.writableEnded);
  if (tcp instanceof Socket && !(tcp instanceof TLSSocket) && !tcp.connecting && !tcp.destroyed && !ended) tcp.resetAndDestroy();
  s.destroy();
}

/**
 * The one byte pump. Copies bytes both ways between two connected sockets until both directions
 * are done, and owns both sockets from the moment it is called (it destroys them when finished).
 * Either side may also be another byte Duplex that keeps these semantics (the bridge's
 * BridgeStream): there, destroy() before both directions ended is its reset.
 *
 * - Backpressure: a reader whose peer's write buffer is full is paused until that peer drains
 *   (what `stream.pipe` does; see below why not pipe() itself).
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
export function pipeSockets(a: Duplex, b: Duplex, o?: PipeOptions): Promise<PipeResult> {
  // Every closure below shares this one function context: an idle tunnel holds them (and the
  // sockets) for as long as it lives, so each extra context or once() wrapper is paid per tunnel
  // (bench/memory). Hence no Promise executor scope, no per-direction helper scopes, no once(),
  // and no default parameter value (V8 gives parameters with defaults a context of their own).
  let settle!: (r: PipeResult) => void;
  const done = new Promise<PipeResult>((resolve) => (settle = resolve));
  let bytesAtoB = 0;
  let bytesBtoA = 0;
  let error: Error | undefined;
  let closed = 0;
  let askedA = false;
  let askedB = false;
  let idle = false;

  // The data path: what pipe() does for one source and one destination, by hand. pipe() costs
  // every direction nine closures and their context (its unpipe machinery, which a pump that owns
  // both sockets never uses), and counting bytes would need a second 'data' listener on top: an
  // idle tunnel carried ~2 KiB more than these four closures. The per-chunk work is pipe()'s:
  // write, pause when the peer's buffer is full, resume on its 'drain'.
  const dataA = (chunk: Buffer): void => {
    bytesAtoB += chunk.length;
    if (!b.write(chunk)) a.pause();
  };
  const dataB = (chunk: Buffer): void => {
    bytesBtoA += chunk.length;
    if (!a.write(chunk)) b.pause();
  };
  const drainA = (): void => void b.resume(); // a drained: b may send again
  const drainB = (): void => void a.resume();

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
    if (++closed === 2) settle({ bytesAtoB, bytesBtoA, error, idle });
  };
  const closeA = (): void => onClose(a);
  const closeB = (): void => onClose(b);

  /** Passes `from`'s FIN on to `to`, once `confirm` (if any) vouches for it. */
  const forwardEnd = (to: Duplex, confirm: (() => Promise<boolean>) | undefined): void => {
    if (!confirm) {
      to.end();
      return;
    }
    confirm().then(
      (ok) => (ok ? to.end() : abort()),
      () => abort(),
    );
  };
  // 'end' comes at most once (the flags guard the already-ended case below against a late event).
  const endA = (): void => {
    if (askedA) return;
    askedA = true;
    forwardEnd(b, o?.confirmEndOfA);
  };
  const endB = (): void => {
    if (askedB) return;
    askedB = true;
    forwardEnd(a, o?.confirmEndOfB);
  };

  // The 'end' forwarding is separate from the data path, so it can wait for a confirmation.
  a.on('data', dataA);
  b.on('data', dataB);
  a.on('drain', drainA);
  b.on('drain', drainB);
  a.on('error', onError);
  b.on('error', onError);
  // An 'end' or 'close' that already happened before the hand-off is handled now ('close' in a
  // microtask, after the 'end' it follows).
  if (a.readableEnded) endA();
  else a.on('end', endA);
  if (b.readableEnded) endB();
  else b.on('end', endB);
  if (a.closed) queueMicrotask(closeA);
  else a.on('close', closeA);
  if (b.closed) queueMicrotask(closeB);
  else b.on('close', closeB);
  const idleMs = o?.idleTimeoutMs;
  if (idleMs !== undefined && idleMs > 0) {
    // Every byte of the tunnel is read from or written to each side, so one side's inactivity
    // timer sees both directions. A TCP socket has that timer built in (refreshed by its reads
    // and writes: no per-chunk cost here); two other Duplexes get a timer over the byte counts.
    const onIdle = (): void => {
      idle = true;
      abort();
    };
    const timed = a instanceof Socket ? a : b instanceof Socket ? b : undefined;
    if (timed) {
      timed.setTimeout(idleMs);
      timed.on('timeout', onIdle);
    } else {
      let seen = -1;
      const timer = setInterval(() => {
        const moved = bytesAtoB + bytesBtoA;
        if (moved === seen) onIdle();
        seen = moved;
      }, idleMs);
      timer.unref();
      void done.then(() => clearInterval(timer));
    }
  }
  // Start reading (sockets may come paused, e.g. pauseOnConnect), unless the peer is already
  // full: then its 'drain' starts it. Adding a 'data' listener does not resume a paused stream.
  if (b.writableNeedDrain) a.pause();
  else a.resume();
  if (a.writableNeedDrain) b.pause();
  else b.resume();
  return done;
}
