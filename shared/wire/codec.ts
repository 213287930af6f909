import { TunnoxError } from '../platform/errors.js';
import { DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, WIRE_PACKET_TYPES, packetTypeName } from './packets.js';

export interface Frame {
  readonly type: number;
  readonly payload: Buffer;
}

/** A protocol violation: the connection it came from must be closed. */
export class FrameError extends TunnoxError {}

const EMPTY = Buffer.alloc(0);

export function encodeFrame(type: number, payload: Buffer | Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length);
  frame.writeUInt8(type, 0);
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, FRAME_HEADER_SIZE);
  return frame;
}

export function encodeJsonFrame(type: number, message: unknown): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(message), 'utf8'));
}

/**
 * Incremental frame decoder: feed it chunks as they arrive, at any boundaries. The length header is
 * checked against the cap before any payload is buffered, so an oversized frame costs nothing.
 *
 * A tunnel connection carries exactly one frame each way before it turns into a raw byte stream,
 * and raw bytes may arrive in the same chunk as that frame. Pass `maxFrames = 1` so the decoder
 * stops there without looking at what follows, then hand `takeRemainder()` to the byte pump.
 *
 * Cost is linear in the bytes pushed, even one byte at a time: a parsed header is remembered
 * while its payload trickles in, and a payload spanning chunks is copied once.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed = false;
  /** Header of the frame whose payload is still incomplete (its 5 bytes are still in `chunks`). */
  private pending: { type: number; length: number } | undefined;

  constructor(private maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {}

  /**
   * Changes the cap for frames not yet examined. A connection starts with a small cap (nothing
   * but a handshake is allowed before authentication) and gets the full one once authenticated;
   * frames already buffered behind the first one are checked against the new cap.
   */
  setMaxFrameSize(bytes: number): void {
    this.maxFrameSize = bytes;
  }

  /**
   * Returns the complete frames in the data seen so far, at most `maxFrames` of them; anything
   * after stays buffered, unexamined. Throws FrameError on a violation, after which the decoder
   * refuses further input (the connection must be closed).
   */
  push(chunk: Buffer, maxFrames = Number.POSITIVE_INFINITY): Frame[] {
    if (this.failed) throw new FrameError('TNX_WIRE_DECODER_FAILED', 'decoder already failed');
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    while (frames.length < maxFrames) {
      if (!this.pending) {
        if (this.buffered < FRAME_HEADER_SIZE) break;
        this.pending = this.readHeader();
      }
      const { type, length } = this.pending;
      if (this.buffered < FRAME_HEADER_SIZE + length) break;
      this.pending = undefined;
      this.skip(FRAME_HEADER_SIZE);
      frames.push({ type, payload: this.take(length) });
    }
    return frames;
  }

  /**
   * Everything received after the last returned frame (possibly a partial frame), as one buffer.
   * Resets the decoder to empty.
   */
  takeRemainder(): Buffer {
    const rest = this.chunks.length === 0 ? EMPTY : this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    this.pending = undefined;
    return rest;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  private readHeader(): { type: number; length: number } {
    const first = this.chunks[0]!;
    const header = first.length >= FRAME_HEADER_SIZE ? first : this.copyOut(FRAME_HEADER_SIZE);
    const type = header.readUInt8(0);
    const length = header.readUInt32BE(1);
    if (!WIRE_PACKET_TYPES.has(type)) {
      this.failed = true;
      throw new FrameError('TNX_WIRE_UNKNOWN_TYPE', `unknown or unexpected packet type ${packetTypeName(type)}`);
    }
    if (length > this.maxFrameSize) {
      this.failed = true;
      throw new FrameError('TNX_WIRE_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the ${this.maxFrameSize} byte limit`);
    }
    return { type, length };
  }

  /** Copies the first n buffered bytes into a new buffer without consuming them. */
  private copyOut(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (off === n) break;
    }
    return out;
  }

  private skip(n: number): void {
    this.take(n);
  }

  /** Consumes exactly n buffered bytes (n <= buffered). Zero-copy when they lie in one chunk. */
  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    let i = 0;
    while (off < n) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) i++;
      else this.chunks[i] = c.subarray(k);
    }
    this.chunks.splice(0, i);
    return out;
  }
}
