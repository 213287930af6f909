import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import { KEEPALIVE_OPTIONS } from '../net/keepalive.js';
import { listen } from '../net/listen.js';
import type { TlsIdentity } from './cert.js';
import type { Listener } from './conn.js';

/** The first byte of every TLS connection (a handshake record); no Tunnox frame or HTTP request starts with it. */
const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * TLS 1.3 suites in the edge's order of preference: AES-128-GCM first (hardware AES, less work per
 * byte than AES-256 at a strength nobody attacks), then AES-256-GCM and ChaCha20-Poly1305 (for
 * peers without AES instructions).
 */
export const TLS13_CIPHERSUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** TLS 1.3 only, from `identity`: the context every accepted TLS connection shares. */
export function serverContext(identity: TlsIdentity): SecureContext {
  return createSecureContext({ cert: identity.cert, key: identity.key, minVersion: 'TLSv1.3', ciphers: TLS13_CIPHERSUITES, honorCipherOrder: true });
}

export interface AcceptorOptions {
  host: string;
  port: number;
  /** Without one the port serves plain TCP only (and a TLS client is told nothing: it is closed). */
  tls?: TlsIdentity | undefined;
  /**
   * Called with every connection: a TLSSocket (its handshake may still be running; bytes written
   * before it completes are sent after) when the peer opened with TLS, else the plain socket.
   * Whether plaintext is acceptable is the handler's decision (it can answer in the protocol).
   */
  onConn: (conn: Socket, secure: boolean) => void;
  /** Time a connection may take to send its first byte; default 10 s. */
  firstByteTimeoutMs?: number;
}

const kAcceptor = Symbol('tunnox.acceptor');
/** An accepted socket: net.Server sets `server` on each, and the acceptor hangs off the server (no per-socket field). */
type Peeking = Socket & { server?: Server & { [kAcceptor]?: Acceptor } };
const acceptorOf = (s: Peeking): Acceptor | undefined => s.server?.[kAcceptor];

/**
 * One TCP port that serves TLS and, where the handler accepts it, plaintext: it peeks at the first
 * byte of each connection (0x16 opens a TLS handshake) and hands the connection on, as a TLS
 * socket over the same TCP handle or as the plain socket. The accept path allocates no closure per
 * connection (module functions with the acceptor on the socket), so an idle tunnel costs what
 * its sockets do.
 */
export class Acceptor implements Listener {
  private server: Server | undefined;
  /** Sockets that have not sent their first byte, with when they were accepted (oldest first). */
  private readonly pending = new Map<Socket, number>();
  private sweeper: NodeJS.Timeout | undefined;
  private readonly context: SecureContext | undefined;
  readonly firstByteTimeoutMs: number;
  private boundPort = 0;

  constructor(private readonly o: AcceptorOptions) {
    this.context = o.tls ? serverContext(o.tls) : undefined;
    this.firstByteTimeoutMs = o.firstByteTimeoutMs ?? 10_000;
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    // TCP keepalive on the TCP socket itself: below a TLS socket, setKeepAlive on the TLS one does not reach it.
    const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: false, ...KEEPALIVE_OPTIONS }, onConnection);
    (server as Server & { [kAcceptor]?: Acceptor })[kAcceptor] = this;
    await listen(server, { host: this.o.host, port: this.o.port });
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
    // One timer for every silent connection, not one per socket: a socket's own setTimeout keeps its
    // Timeout object (and a bound closure) for the socket's whole life, even once cleared.
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.min(1_000, Math.floor(this.firstByteTimeoutMs / 4))));
    this.sweeper.unref();
    return this.boundPort;
  }

  /** Stops accepting; resolves once every accepted connection has closed (as net.Server.close). */
  close(): Promise<void> {
    clearInterval(this.sweeper);
    const server = this.server;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  /** Destroys connections that have not sent their first byte yet. */
  destroyPending(): void {
    for (const s of this.pending.keys()) s.destroy();
    this.pending.clear();
  }

  /** Closes connections that stayed silent past the first-byte timeout (the map is oldest first). */
  private sweep(): void {
    const cutoff = Date.now() - this.firstByteTimeoutMs;
    for (const [s, at] of this.pending) {
      if (at > cutoff) break;
      this.pending.delete(s);
      s.destroy();
    }
  }

  /** @internal */
  accepted(socket: Peeking): void {
    this.pending.set(socket, Date.now());
    socket.on('error', onPeekError);
    socket.once('readable', onPeekReadable);
    socket.once('close', onPeekClose);
  }

  /** @internal */
  classify(socket: Peeking): void {
    const chunk = socket.read() as Buffer | null;
    if (chunk === null) {
      socket.once('readable', onPeekReadable); // woken without data (an end comes next)
      return;
    }
    socket.unshift(chunk);
    this.pending.delete(socket);
    socket.off('close', onPeekClose);
    socket.off('error', onPeekError);
    if (chunk[0] === TLS_HANDSHAKE_RECORD && this.context) {
      // Over the socket's own handle (what tls.Server does); the peeked bytes are fed to it first.
      const tls = new TLSSocket(socket, { isServer: true, secureContext: this.context, requestCert: false, rejectUnauthorized: false });
      this.o.onConn(tls as unknown as Socket, true);
    } else {
      this.o.onConn(socket, false);
    }
  }

  /** @internal */
  forget(socket: Peeking): void {
    this.pending.delete(socket);
  }
}

function onConnection(this: Server & { [kAcceptor]?: Acceptor }, socket: Socket): void {
  this[kAcceptor]!.accepted(socket);
}
function onPeekReadable(this: Peeking): void {
  acceptorOf(this)?.classify(this);
}
function onPeekClose(this: Peeking): void {
  acceptorOf(this)?.forget(this);
}
function onPeekError(this: Peeking): void {
  // The 'close' that follows forgets the socket; nothing to report for a connection that said nothing.
}
