import type { Conn } from '../transport/conn.js';
import { FrameError, type FrameDecoder } from '../wire/codec.js';
import { decodeMessage, encodeMessage, type ControlMessage, type MessageBody } from '../wire/messages.js';
import { PacketType, packetTypeName } from '../wire/packets.js';

export interface ControlChannelOptions {
  socket: Conn;
  /** The decoder that read the handshake; it may already hold the next frames. */
  decoder: FrameDecoder;
  /** Packet types this side may receive; anything else is a protocol violation. */
  accept: ReadonlySet<number>;
  heartbeatIntervalMs: number;
  /**
   * The heartbeat deadline: silence (no byte at all from the peer) this long closes the channel,
   * measured from the last byte received, not polled per interval. Default 3 heartbeat intervals.
   */
  silenceTimeoutMs?: number;
  /** A peer that stops reading while we keep writing is cut off past this backlog. Default 8 MiB. */
  maxWriteBacklogBytes?: number;
  /** Called for every accepted message except heartbeats. Must not throw. */
  onMessage: (msg: ControlMessage) => void;
  /** Called exactly once, when the channel closes for any reason. */
  onClose: (reason: string, err?: unknown) => void;
}

/**
 * The control connection shared by edge and agent (rathole style: one protocol, mirrored peers):
 * frame decoding, message validation, heartbeats both ways and liveness. Owns the socket.
 */
export class ControlChannel {
  private closedReason: string | undefined;
  private lastReceived = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private silent = false;

  constructor(private readonly o: ControlChannelOptions) {}

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** The channel was closed because the peer missed the heartbeat deadline (silent, not closed). */
  get timedOut(): boolean {
    return this.silent;
  }

  /** Starts reading (including frames already buffered in the decoder) and heartbeating. */
  start(): void {
    const { socket } = this.o;
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.once('end', () => this.close('peer closed the connection'));
    socket.once('close', () => this.close('connection lost'));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`, err));
    if (socket.destroyed) {
      // Lost while the peer was being authenticated: its 'close' already fired.
      this.close('connection lost');
      return;
    }
    const silence = this.o.silenceTimeoutMs ?? this.o.heartbeatIntervalMs * 3;
    this.heartbeat = setInterval(() => this.send(PacketType.Heartbeat, { ts: Date.now() }), this.o.heartbeatIntervalMs);
    this.heartbeat.unref();
    // One timer per channel, re-armed only when it fires (not per chunk): it fires at most
    // `silence` after the last byte, whatever the heartbeat interval.
    const check = (): void => {
      const quiet = Date.now() - this.lastReceived;
      if (quiet >= silence) {
        this.silent = true;
        this.close(`no frame for ${quiet} ms (heartbeat timeout, deadline ${silence} ms)`);
        // A silent peer will not read a FIN either: free the socket now, not after the grace.
        socket.destroy();
        return;
      }
      this.deadline = setTimeout(check, silence - quiet);
      this.deadline.unref();
    };
    this.deadline = setTimeout(check, silence);
    this.deadline.unref();
    this.receive(Buffer.alloc(0));
    socket.resume();
  }

  /** Queues a message; returns false if the channel is closed. */
  send<T extends ControlMessage['type']>(type: T, body: MessageBody<T>): boolean {
    if (this.closed) return false;
    const { socket } = this.o;
    socket.write(encodeMessage(type, body));
    if (socket.writableLength > (this.o.maxWriteBacklogBytes ?? 8 * 1024 * 1024)) {
      this.close(`peer is not reading (${socket.writableLength} bytes queued)`);
    }
    return true;
  }

  /** Flushes what was queued (e.g. a session.close command), then closes. Idempotent. */
  close(reason: string, err?: unknown): void {
    if (this.closed) return;
    this.closedReason = reason;
    clearInterval(this.heartbeat);
    clearTimeout(this.deadline);
    const { socket } = this.o;
    if (!socket.destroyed) {
      socket.end();
      const timer = setTimeout(() => socket.destroy(), 2_000);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
    }
    this.o.onClose(reason, err);
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    let messages: ControlMessage[];
    try {
      const frames = this.o.decoder.push(chunk);
      messages = [];
      for (const frame of frames) {
        if (!this.o.accept.has(frame.type)) {
          throw new FrameError('TNX_WIRE_UNEXPECTED_TYPE', `unexpected ${packetTypeName(frame.type)} on a control connection`);
        }
        messages.push(decodeMessage(frame));
      }
    } catch (err) {
      this.close(`protocol violation: ${(err as Error).message}`, err);
      this.o.socket.destroy();
      return;
    }
    if (chunk.length > 0) this.lastReceived = Date.now();
    for (const msg of messages) {
      if (this.closed) return;
      if (msg.type !== PacketType.Heartbeat) this.o.onMessage(msg);
    }
  }
}
