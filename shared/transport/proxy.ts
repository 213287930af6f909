import { connect, isIP, type Socket } from 'node:net';
import { KEEPALIVE_OPTIONS } from '../net/keepalive.js';
import { TunnoxError } from '../platform/errors.js';
import { parseHostPort } from '../net/address.js';
import type { Scheme } from './conn.js';

/** An HTTP proxy reached with CONNECT. */
export interface HttpProxy {
  readonly host: string;
  readonly port: number;
  /** `Basic …` for Proxy-Authorization, from user:password in the URL. */
  readonly authorization?: string | undefined;
  readonly text: string;
}

/**
 * Which proxy an agent uses: `--proxy` for every edge, else HTTPS_PROXY for TLS and wss edges
 * and HTTP_PROXY for ws and tcp ones, except for hosts NO_PROXY names. Given by the CLI (the
 * only place that reads the environment).
 */
export interface ProxySettings {
  proxy?: string | undefined;
  httpsProxy?: string | undefined;
  httpProxy?: string | undefined;
  noProxy?: string | undefined;
}

/** Parses `http://[user:password@]HOST[:PORT]` (port 80 by default; `HOST:PORT` alone too). Throws naming the value. */
export function parseProxyUrl(value: string): HttpProxy {
  const text = value.trim();
  const m = /^(?:([a-z][a-z0-9+.-]*):\/\/)?(?:([^@/]*)@)?([^/]+?)\/?$/i.exec(text);
  if (!m || (m[1] !== undefined && m[1].toLowerCase() !== 'http')) {
    throw new Error(`invalid proxy "${value}": expected http://HOST:PORT (an HTTP proxy that allows CONNECT)`);
  }
  const { host, port } = parseHostPort(m[3]!, 80);
  const auth = m[2] !== undefined ? `Basic ${Buffer.from(decodeURIComponent(m[2])).toString('base64')}` : undefined;
  return { host, port, authorization: auth, text: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
}

/** Whether NO_PROXY (comma-separated: `*`, host names, `.domain` or `domain` suffixes, IPs, optional `:port`) exempts host:port. */
export function bypassesProxy(noProxy: string | undefined, host: string, port: number): boolean {
  if (!noProxy) return false;
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  for (const raw of noProxy.split(',')) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    const pm = /^(.*):(\d+)$/.exec(entry);
    if (pm && isIP(entry) !== 6) {
      if (Number(pm[2]) !== port) continue;
      entry = pm[1]!;
    }
    entry = entry.replace(/^\[|\]$/g, '');
    if (isIP(entry)) {
      if (entry === h) return true;
      continue;
    }
    const suffix = entry.replace(/^\*?\./, '');
    if (h === suffix || h.endsWith(`.${suffix}`)) return true;
  }
  return false;
}

/** The proxy to dial `host:port` of `scheme` through, if any. Throws on a malformed proxy URL. */
export function proxyFor(s: ProxySettings | undefined, scheme: Scheme, host: string, port: number): HttpProxy | undefined {
  if (!s) return undefined;
  const url = s.proxy || (scheme === 'tls' || scheme === 'wss' ? s.httpsProxy : s.httpProxy);
  if (!url) return undefined;
  if (!s.proxy && bypassesProxy(s.noProxy, host, port)) return undefined;
  return parseProxyUrl(url);
}

/** Most a proxy's CONNECT answer head may be: a proxy is not a place to buffer without bound. */
const MAX_RESPONSE_HEAD = 16 * 1024;

/**
 * A TCP connection to host:port through `proxy` (HTTP CONNECT). Resolves with the socket once the
 * proxy answered 2xx; bytes the proxy sent after its answer stay readable on the socket. Rejects
 * with a TunnoxError naming the proxy and its answer otherwise. The socket is created at once and
 * given to `onSocket`, so the caller can destroy it (abort) at any time.
 */
export function connectViaProxy(proxy: HttpProxy, host: string, port: number, timeoutMs: number, onSocket?: (s: Socket) => void): Promise<Socket> {
  const socket = connect({ host: proxy.host, port: proxy.port, allowHalfOpen: true, noDelay: true, ...KEEPALIVE_OPTIONS });
  onSocket?.(socket);
  const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new Promise<Socket>((resolve, reject) => {
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new TunnoxError('TNX_PROXY_FAILED', `proxy ${proxy.text} did not answer CONNECT ${target} within ${timeoutMs} ms`)), timeoutMs);
    function cleanup(): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    }
    function fail(err: Error): void {
      cleanup();
      socket.destroy();
      reject(err);
    }
    function onError(err: Error): void {
      fail(new TunnoxError('TNX_PROXY_FAILED', `cannot reach proxy ${proxy.text}: ${err.message}`));
    }
    function onClose(): void {
      fail(new TunnoxError('TNX_PROXY_FAILED', `proxy ${proxy.text} closed the connection before answering CONNECT ${target}`));
    }
    function onData(chunk: Buffer): void {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_RESPONSE_HEAD) fail(new TunnoxError('TNX_PROXY_FAILED', `proxy ${proxy.text} sent an oversized answer to CONNECT`));
        return;
      }
      const status = /^HTTP\/1\.[01] (\d{3})([^\r\n]*)/.exec(head.subarray(0, end).toString('latin1'));
      if (!status || !status[1]!.startsWith('2')) {
        const line = head.subarray(0, Math.min(end, head.indexOf('\r\n'))).toString('latin1').slice(0, 200);
        fail(new TunnoxError('TNX_PROXY_REFUSED', `proxy ${proxy.text} refused CONNECT ${target}: ${line || 'no status line'}`));
        return;
      }
      cleanup();
      socket.pause();
      const rest = head.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    }
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.write(
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n` + (proxy.authorization ? `Proxy-Authorization: ${proxy.authorization}\r\n` : '') + '\r\n',
    );
  });
}
