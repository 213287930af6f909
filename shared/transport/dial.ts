import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { KEEPALIVE_OPTIONS } from '../net/keepalive.js';
import { TunnoxError } from '../platform/errors.js';
import type { Conn, Dialer, PendingDial } from './conn.js';
import { connectViaProxy, proxyFor, type HttpProxy, type ProxySettings } from './proxy.js';
import { TrustError, verifyEdge, type TrustOptions, type TrustVerdict } from './trust.js';
import type { EdgeUrl } from './url.js';
import { upgradeClient } from './ws.js';

/** What an agent needs to reach its edges: how to trust them and which proxy to use. Shared by all its dials. */
export interface DialOptions {
  trust: TrustOptions;
  proxy?: ProxySettings | undefined;
  /** Called once per edge address with how its certificate was trusted (first use is worth a warning). */
  onTrusted?: ((address: string, verdict: TrustVerdict, fingerprint: string | undefined) => void) | undefined;
}

export type { PendingDial } from './conn.js';

/**
 * Dials agents' edges by URL scheme (frp style: the transport is chosen by the address, the
 * protocol above it is the same): `tcp` plain TCP, `tls` TLS 1.3, `ws` WebSocket, `wss` WebSocket
 * over TLS 1.3; any of them through an HTTP CONNECT proxy. TLS sessions are resumed from tickets
 * kept per edge address, so tunnel opens after the first connection skip the full handshake and
 * the certificate check. A dial resolves only once the edge is verified: nothing (no credential)
 * is written to an edge that is not trusted.
 */
export class EdgeDialer implements Dialer {
  private readonly sessions = new Map<string, Buffer>();
  private readonly reported = new Set<string>();

  constructor(private readonly o: DialOptions) {}

  dial(url: EdgeUrl, timeoutMs: number): PendingDial {
    let current: Socket | undefined;
    let aborted = false;
    const hold = (s: Socket): void => {
      current = s;
      if (aborted) s.destroy();
    };
    const conn = this.run(url, timeoutMs, hold, () => aborted);
    return {
      conn,
      abort: () => {
        aborted = true;
        current?.destroy();
      },
    };
  }

  private async run(url: EdgeUrl, timeoutMs: number, hold: (s: Socket) => void, aborted: () => boolean): Promise<Conn> {
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(1, deadline - Date.now());
    const proxy = proxyFor(this.o.proxy, url.scheme, url.host, url.port);
    let raw = await (proxy ? connectViaProxy(proxy, url.host, url.port, left(), hold) : tcp(url, left(), hold));
    if (aborted()) throw closedError(url);
    if (url.scheme === 'tls' || url.scheme === 'wss') raw = await this.secure(raw, url, left(), hold, proxy);
    if (aborted()) {
      raw.destroy();
      throw closedError(url);
    }
    if (url.scheme === 'ws' || url.scheme === 'wss') {
      return upgradeClient(raw, `${url.scheme}://${url.address}${url.path}`, left());
    }
    return raw;
  }

  private secure(raw: Socket, url: EdgeUrl, timeoutMs: number, hold: (s: Socket) => void, proxy: HttpProxy | undefined): Promise<TLSSocket> {
    const session = this.sessions.get(url.address);
    const socket = tlsConnect({
      socket: raw,
      ...(isIP(url.host) ? {} : { servername: url.host }),
      minVersion: 'TLSv1.3',
      // Checked by verifyEdge below (pin, --ca, system CAs, known_edges), before anything is written.
      rejectUnauthorized: false,
      ...(this.o.trust.ca !== undefined ? { ca: this.o.trust.ca } : {}),
      ...(session ? { session } : {}),
    });
    hold(socket);
    let trusted = false;
    socket.once('session', (ticket: Buffer) => {
      // Tickets arrive after the handshake; only those of a verified connection are kept.
      if (trusted) this.sessions.set(url.address, ticket);
    });
    return new Promise<TLSSocket>((resolve, reject) => {
      const timer = setTimeout(() => fail(new TunnoxError('TNX_TLS_FAILED', `TLS handshake with ${url.address} did not finish within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once('error', (err: NodeJS.ErrnoException) => {
        const via = proxy ? ` (through proxy ${proxy.text})` : '';
        const hint =
          err.code === 'ECONNRESET' || /wrong version number|packet length too long|unexpected eof|disconnected before secure/i.test(err.message)
            ? `; if that edge serves plain TCP only, connect with tcp://${url.address} (its operator must run it with --allow-plaintext)`
            : '';
        fail(new TunnoxError('TNX_TLS_FAILED', `TLS handshake with ${url.address}${via} failed: ${err.message}${hint}`));
      });
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        const fp = socket.getPeerCertificate()?.fingerprint256;
        verifyEdge(socket, url.address, this.o.trust).then(
          (verdict) => {
            trusted = true;
            socket.removeAllListeners('error');
            if (!this.reported.has(url.address) && verdict !== 'resumed') {
              this.reported.add(url.address);
              this.o.onTrusted?.(url.address, verdict, fp ? `sha256:${fp.replaceAll(':', '').toLowerCase()}` : undefined);
            }
            resolve(socket);
          },
          (err: unknown) => {
            socket.destroy();
            reject(err instanceof TrustError ? err : new TrustError('TNX_TLS_UNTRUSTED', String(err)));
          },
        );
      });
    });
  }
}

function closedError(url: EdgeUrl): Error {
  return new TunnoxError('TNX_WIRE_CLOSED', `dial to ${url.text} aborted`);
}

function tcp(url: EdgeUrl, timeoutMs: number, hold: (s: Socket) => void): Promise<Socket> {
  const socket = netConnect({ host: url.host, port: url.port, allowHalfOpen: true, noDelay: true, ...KEEPALIVE_OPTIONS });
  hold(socket);
  return new Promise((resolve, reject) => {
    const settle = (err: Error | undefined): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', settle);
      socket.off('close', onClose);
      if (err) {
        socket.destroy();
        reject(err);
      } else {
        resolve(socket);
      }
    };
    const onConnect = (): void => settle(undefined);
    const onClose = (): void => settle(closedError(url));
    const timer = setTimeout(() => settle(new TunnoxError('TNX_CONNECT_TIMEOUT', `cannot reach the edge ${url.address}: no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', onConnect);
    socket.once('error', settle);
    socket.once('close', onClose);
  });
}
