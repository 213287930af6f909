import { parseHostPort } from '../net/address.js';
import type { Scheme } from './conn.js';

/** The WebSocket path the edge serves and agents ask for when a ws(s) URL names none. */
export const WS_PATH = '/tunnox';
/** The edge's default WebSocket port (`--ws-port`). */
export const DEFAULT_WS_PORT = 8081;

/** Where an agent connects: one entry of --server. */
export interface EdgeUrl {
  readonly scheme: Scheme;
  readonly host: string;
  readonly port: number;
  /** ws/wss: the request path (default /tunnox); '' otherwise. */
  readonly path: string;
  /** Canonical host:port: what credentials, known_edges and logs name. */
  readonly address: string;
  /** Canonical URL form (`tls://` omitted: HOST:PORT means TLS). */
  readonly text: string;
}

const SCHEMES: readonly Scheme[] = ['tcp', 'tls', 'ws', 'wss'];

/**
 * Parses `HOST[:PORT]` (TLS), `tls://HOST[:PORT]`, `tcp://HOST[:PORT]` (plaintext: the edge must
 * run --allow-plaintext), `ws://HOST[:PORT][/PATH]` and `wss://HOST[:PORT][/PATH]`. The port
 * defaults to `defaultPort` for tcp/tls, 80 for ws and 443 for wss (an ingress); the path to
 * /tunnox. Throws an Error naming the entry.
 */
export function parseEdgeUrl(entry: string, defaultPort: number): EdgeUrl {
  const text = entry.trim();
  const m = /^([a-z]+):\/\/(.*)$/i.exec(text);
  const scheme = (m ? m[1]!.toLowerCase() : 'tls') as Scheme;
  if (!SCHEMES.includes(scheme)) throw new Error(`invalid server "${entry}": unknown scheme ${m![1]}:// (expected tcp://, tls://, ws:// or wss://, or HOST:PORT for TLS)`);
  let rest = m ? m[2]! : text;
  let path = '';
  if (scheme === 'ws' || scheme === 'wss') {
    const slash = rest.indexOf('/');
    path = slash >= 0 ? rest.slice(slash) : WS_PATH;
    if (slash >= 0) rest = rest.slice(0, slash);
    if (!/^\/[\x21-\x7e]*$/.test(path)) throw new Error(`invalid server "${entry}": bad path`);
  } else if (rest.includes('/')) {
    throw new Error(`invalid server "${entry}": only ws:// and wss:// take a path`);
  }
  const { host, port } = parseHostPort(rest, scheme === 'ws' ? 80 : scheme === 'wss' ? 443 : defaultPort);
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const shown = scheme === 'tls' ? address : `${scheme}://${address}${path}`;
  return { scheme, host, port, path, address, text: shown };
}
