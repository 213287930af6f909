import type { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { BridgeError, BridgeErrorCode } from './errors.js';
import { MAX_FRAME_PAYLOAD, type BridgeFrame, type OutFrame } from './proto.js';

/** The grpc-js bidi call as this adapter uses it: an object-mode duplex of frames. */
export interface FrameCall extends EventEmitter {
  write(frame: OutFrame, cb?: (err?: Error | null) => void): boolean;
  end(): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** The side-specific parts: how a finished call is closed, and how a reset is sent. */
export interface CallEnds {
  /** Both directions are done cleanly (fin sent and fin received). */
  finish(call: FrameCall): void;
  /** Abort the call at once, so the peer sees a reset (not an end), whatever is still queued. */
  reset(call: FrameCall, err: Error | null): void;
  /** Half-close after our fin frame (the caller's HTTP/2 END_STREAM); the callee does nothing here. */
  afterFin(call: FrameCall): void;
}

/** Bytes one stream may hold in its own buffers per direction (plus grpc-js's and HTTP/2's: see docs/cluster.md). */
export const STREAM_HIGH_WATER_MARK = 64 * 1024;

/**
 * Payload bytes a stream may have queued in its grpc-js call. grpc-js completes one message write
 * at a time per call, so two frames keep the HTTP/2 stream busy; counting bytes here (rather than
 * relying on the call's 16-message high-water mark) keeps the send side small.
 */
export const SEND_BUDGET = 2 * MAX_FRAME_PAYLOAD;

/**
 * Flow-control stalls of every bridge stream in this process since start, for the metrics:
 * `send`: a write waited because SEND_BUDGET bytes were still queued in the call (HTTP/2's
 * window to the peer is spent, or its socket is full); `receive`: a received frame found our
 * readable buffer full and paused the call (our consumer is slow; the peer's window runs out
 * next). Process-wide counts rather than an option: streams are made by both the pool and the
 * server, and a process exports one total.
 */
export const bridgeWindowStalls = { send: 0, receive: 0 };

/**
 * A byte Duplex over one bridge call, so the byte pump (shared/net/pipe.ts) treats a bridged
 * tunnel like a socket:
 *
 * - Backpressure: a write completes only while the call holds less than SEND_BUDGET bytes not
 *   yet handed to HTTP/2 (write callbacks count them down). Reads pause the call while our
 *   readable buffer is full, which stops grpc-js reading the HTTP/2 stream, which stops the
 *   stream's WINDOW_UPDATEs.
 *   The connection window is replenished on receipt, so a paused stream holds at most its own
 *   window and never stalls its neighbours.
 * - Half-close: end() sends Data{fin}; a received fin ends our readable side.
 * - Reset: destroy() before both fins were exchanged resets the call; a cancelled or failed call,
 *   or one that ends without a fin, destroys this stream with a BridgeError(TNX_BRIDGE_RESET).
 *   A reset never surfaces as 'end'.
 */
export class BridgeStream extends Duplex {
  private sentFin = false;
  private receivedFin = false;
  private finished = false;
  /** Payload bytes handed to the call whose write has not completed yet (bounded by SEND_BUDGET). */
  private unsent = 0;
  private whenSent: (() => void) | undefined;
  /** A write or end held back until release(): the callee may not send before its OpenAck. */
  private held: (() => void)[] | undefined;

  constructor(
    private readonly call: FrameCall,
    private readonly ends: CallEnds,
    options: { holdWrites?: boolean } = {},
  ) {
    super({ allowHalfOpen: true, highWaterMark: STREAM_HIGH_WATER_MARK });
    if (options.holdWrites) this.held = [];
    call.on('data', this.onFrame);
    call.on('end', this.onCallEnd);
    call.on('error', this.onCallError);
    // The callee's call reports a cancelled caller (RST_STREAM, lost connection) this way; the
    // caller's call has no such event.
    call.on('cancelled', () => this.onCallError(new Error('call cancelled by the peer')));
  }

  private readonly onFrame = (frame: BridgeFrame): void => {
    if (frame.kind !== 'data') {
      if (frame.kind === 'credit') return; // reserved: HTTP/2 windows do the flow control
      this.destroy(new BridgeError(BridgeErrorCode.Protocol, `unexpected ${frame.kind} frame on an open bridge stream`));
      return;
    }
    if (this.receivedFin) {
      this.destroy(new BridgeError(BridgeErrorCode.Protocol, 'data after fin'));
      return;
    }
    const { payload, fin } = frame.data;
    if (payload.length > 0 && !this.push(payload)) {
      bridgeWindowStalls.receive++;
      this.call.pause();
    }
    if (fin) {
      this.receivedFin = true;
      this.push(null);
      this.maybeFinish();
    }
  };

  private readonly onCallEnd = (): void => {
    // The peer's HTTP/2 direction ended. Without its fin before, bytes may be missing: a reset.
    if (!this.receivedFin) this.destroy(new BridgeError(BridgeErrorCode.Reset, 'bridge call ended without fin'));
  };

  private readonly onCallError = (err: Error): void => {
    if (this.finished) return; // late status noise after a clean close
    this.destroy(new BridgeError(BridgeErrorCode.Reset, `bridge stream reset: ${err.message}`, { cause: err }));
  };

  override _read(): void {
    this.call.resume();
  }

  /** Lets held writes through (after the OpenAck went out). */
  release(): void {
    const held = this.held;
    this.held = undefined;
    for (const op of held ?? []) op();
  }

  /**
   * Lets go of the call without resetting it (the callee refuses the Open and answers on the
   * call itself) and destroys this stream locally, quietly: whoever holds it sees 'close'.
   */
  abandon(): void {
    this.finished = true;
    this.held = undefined;
    this.call.off('data', this.onFrame);
    this.call.off('end', this.onCallEnd);
    this.destroy();
  }

  override _write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.held) {
      this.held.push(() => this._write(chunk, enc, cb));
      return;
    }
    let off = 0;
    const next = (): void => {
      while (off < chunk.length) {
        if (this.unsent >= SEND_BUDGET) {
          bridgeWindowStalls.send++;
          this.whenSent = next;
          return;
        }
        const piece = chunk.subarray(off, off + MAX_FRAME_PAYLOAD);
        off += piece.length;
        this.unsent += piece.length;
        this.call.write({ data: { payload: piece } }, () => this.sent(piece.length));
      }
      cb();
    };
    next();
  }

  /** A frame's write completed (grpc-js handed it to HTTP/2): room for the next one. */
  private sent(n: number): void {
    this.unsent -= n;
    const resume = this.whenSent;
    if (resume && this.unsent < SEND_BUDGET && !this.destroyed) {
      this.whenSent = undefined;
      resume();
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.held) {
      this.held.push(() => this._final(cb));
      return;
    }
    this.call.write({ data: { fin: true } });
    this.sentFin = true;
    this.ends.afterFin(this.call);
    this.maybeFinish();
    cb();
  }

  private maybeFinish(): void {
    if (this.finished || !this.sentFin || !this.receivedFin) return;
    this.finished = true;
    this.ends.finish(this.call);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.call.off('data', this.onFrame);
    if (!this.finished) {
      this.finished = true;
      this.ends.reset(this.call, err);
    }
    cb(err);
  }
}
