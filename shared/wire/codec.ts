import { TunnoxError } from '../platform/errors.js';
import { DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, WIRE_PACKET_TYPES, packetTypeName } from './packets.js';

export interface Frame {
  readonly type: number;
  readonly payload: Buffer;
}

/** A protocol violation: the connection it came from must be closed. */
export class FrameError extends TunnoxError {}

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
 * After a tunnel handshake, `takeRemainder()` hands any bytes that followed the last frame to the
 * raw byte pump.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed = false;

  constructor(private readonly maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {}

  /** Returns every complete frame in the data seen so far. Throws FrameError on a violation. */
  push(chunk: Buffer): Frame[] {
    if (this.failed) throw new FrameError('TNX_WIRE_DECODER_FAILED', 'decoder already failed');
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_SIZE) return frames;
      const header = this.peek(FRAME_HEADER_SIZE);
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
      if (this.buffered < FRAME_HEADER_SIZE + length) return frames;
      this.consume(FRAME_HEADER_SIZE);
      frames.push({ type, payload: this.consume(length) });
    }
  }

  /** Bytes received after the last complete frame (possibly a partial frame). Resets the decoder. */
  takeRemainder(): Buffer {
    const rest = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.chunks, this.buffered).subarray(0, n);
  }

  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      this.buffered -= n;
      return first;
    }
    const all = Buffer.concat(this.chunks, this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}
