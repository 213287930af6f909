import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { TunnoxError } from '../platform/errors.js';

/**
 * The text message that ends one direction (a FIN). Data travels in binary messages only, so a
 * text message is always control and never mistaken for payload.
 */
const FIN = 'fin';
/** Largest message accepted: data messages are what one write carried (at most a few hundred KiB). */
export const WS_MAX_PAYLOAD = 4 * 1024 * 1024;

const kConn = Symbol('tunnox.wsconn');
type Tagged = WebSocket & { [kConn]?: WsConn };

/** Clients send an all-zero mask, which ws skips (no per-byte XOR on either side). See WsConn. */
function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/**
 * A WebSocket as a Conn with TCP semantics, so the one pump and the frame protocol run over it
 * unchanged:
 * - bytes go in binary messages, one per write (several buffered writes become one message);
 * - end() sends the text message "fin" and the other direction keeps flowing (half-close); once
 *   both directions have sent "fin" the socket is closed with 1000 (normal closure);
 * - any other end (a close before both "fin"s, a close code but 1000, a dropped socket, an
 *   unexpected text message) is a reset: the stream is destroyed with ECONNRESET, and destroy()
 *   before both "fin"s drops the connection without a close handshake, which the peer sees as a
 *   reset in turn.
 * Backpressure: a full socket below holds back write callbacks until it drains, and a full read
 * buffer pauses the socket.
 *
 * Masking: RFC 6455 makes clients mask every frame so that a browser page cannot aim crafted
 * bytes at an intermediary's cache. An agent is not a browser running someone else's script, so
 * agents send a zero mask (valid framing; ws then skips the XOR both ways), which saves a pass
 * over every byte. The listeners hang off ws with no per-connection closures (the edge holds
 * thousands of idle ones).
 */
export class WsConn extends Duplex {
  private finSent = false;
  private finReceived = false;

  constructor(
    readonly ws: WebSocket,
    /** The TCP or TLS socket below the WebSocket. */
    readonly raw: Socket,
  ) {
    super({ allowHalfOpen: true, decodeStrings: true });
    (ws as Tagged)[kConn] = this;
    ws.binaryType = 'nodebuffer';
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onError);
    // 'message' starts flowing at once; keep it paused until the stream is read.
    ws.pause();
  }

  get remoteAddress(): string | undefined {
    return this.raw.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.raw.remotePort;
  }
  setNoDelay(noDelay?: boolean): this {
    this.raw.setNoDelay(noDelay);
    return this;
  }
  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.raw.setKeepAlive(enable, initialDelay);
    return this;
  }

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.send(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  private send(data: Buffer, cb: (err?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      cb(connReset('WebSocket closed'));
      return;
    }
    this.ws.send(data, { binary: true, compress: false });
    // The socket below is full: hold this write's callback until it drains (backpressure).
    if (this.raw.writableNeedDrain) this.raw.once('drain', cb);
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      cb(connReset('WebSocket closed'));
      return;
    }
    this.ws.send(FIN);
    this.finSent = true;
    if (this.finReceived) this.ws.close(1000);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const state = this.ws.readyState;
    if (state === WebSocket.OPEN || state === WebSocket.CONNECTING) {
      if (!err && this.finSent && this.finReceived) this.ws.close(1000);
      else this.ws.terminate();
    }
    cb(err);
  }

  /** @internal */
  onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (this.finReceived) {
        this.destroy(connReset('WebSocket peer sent data after its fin'));
        return;
      }
      if (!this.push(data)) this.ws.pause();
      return;
    }
    if (this.finReceived || data.toString('latin1') !== FIN) {
      this.destroy(connReset('WebSocket peer sent an unexpected control message'));
      return;
    }
    this.finReceived = true;
    this.push(null);
    if (this.finSent) this.ws.close(1000);
  }

  /** @internal */
  onClose(code: number): void {
    if (code === 1000 && this.finReceived && this.finSent) return; // clean: the stream closes by itself
    if (!this.destroyed) this.destroy(connReset(`WebSocket closed (${code}) before both directions ended`));
  }
}

function connReset(message: string): Error {
  return Object.assign(new Error(message), { code: 'ECONNRESET' });
}

function onMessage(this: Tagged, data: Buffer, isBinary: boolean): void {
  this[kConn]?.onMessage(data, isBinary);
}
function onClose(this: Tagged, code: number): void {
  this[kConn]?.onClose(code);
}
function onError(this: Tagged, err: Error): void {
  const c = this[kConn];
  if (c && !c.destroyed) c.destroy(Object.assign(err, { code: (err as NodeJS.ErrnoException).code ?? 'ECONNRESET' }));
}

/**
 * The edge's WebSocket endpoint: upgrades requests for `path` on sockets handed to handle() and
 * gives each as a WsConn to `onConn`; anything else gets an HTTP error and is closed.
 */
export class WsAcceptor {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false, skipUTF8Validation: true, clientTracking: false });

  constructor(
    private readonly path: string,
    private readonly onConn: (conn: WsConn) => void,
  ) {}

  /** For an http(s) server's 'upgrade' event. */
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const path = (req.url ?? '').split('?')[0];
    if (path !== this.path) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    socket.setNoDelay(true);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConn(new WsConn(ws, socket)));
  }
}

/**
 * The agent side: a WebSocket handshake for `url` over an already connected (and, for wss,
 * verified) socket. Resolves with the WsConn once the edge accepted the upgrade; rejects with a
 * TunnoxError naming what the edge answered otherwise.
 */
export function upgradeClient(raw: Socket, url: string, timeoutMs: number): Promise<WsConn> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      // A socket from a proxy's CONNECT comes paused (so no byte is lost before someone listens):
      // the HTTP client reads it from the next tick on.
      createConnection: () => {
        process.nextTick(() => raw.resume());
        return raw;
      },
      perMessageDeflate: false,
      skipUTF8Validation: true,
      maxPayload: WS_MAX_PAYLOAD,
      generateMask: zeroMask,
      handshakeTimeout: timeoutMs,
      followRedirects: false,
    });
    const fail = (err: Error): void => {
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      raw.destroy();
      reject(err);
    };
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < 500) body += d;
      });
      // An edge names its refusal (e.g. TNX_WIRE_PLAINTEXT_REFUSED); anything else (an ingress, a proxy) is TNX_WS_REFUSED.
      const named = res.headers['x-tunnox-error'];
      const code = typeof named === 'string' && /^TNX_[A-Z_]+$/.test(named) ? named : 'TNX_WS_REFUSED';
      res.once('end', () => fail(new TunnoxError(code, `the edge refused the WebSocket upgrade at ${url}: HTTP ${res.statusCode}${body ? ` ${body.trim().slice(0, 300)}` : ''}`)));
      res.once('error', () => fail(new TunnoxError('TNX_WS_REFUSED', `the edge refused the WebSocket upgrade at ${url}: HTTP ${res.statusCode}`)));
    });
    ws.once('error', (err) => fail(new TunnoxError('TNX_WS_FAILED', `WebSocket handshake with ${url} failed: ${err.message}`)));
    ws.once('open', () => {
      ws.removeAllListeners();
      raw.setNoDelay(true);
      resolve(new WsConn(ws, raw));
    });
  });
}
