import { timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { TunnoxError } from '../platform/errors.js';
import { formatFingerprint, parseFingerprint } from './cert.js';

/**
 * How an agent decides that the edge at the other end of a TLS connection is the right one, in
 * order of precedence:
 * - `fingerprint`: the certificate's SHA-256 must be exactly this (pinning), nothing else counts;
 * - `ca`: the chain must verify against these CA certificates (PEM) and name the host;
 * - otherwise the system CAs; a certificate they do not vouch for is trusted on first use when a
 *   `knownEdges` file is given: its fingerprint is recorded there per host:port (like SSH's
 *   known_hosts) and every later connection must present the same one.
 */
export interface TrustOptions {
  fingerprint?: string | undefined;
  ca?: string | undefined;
  knownEdges?: KnownEdges | undefined;
}

/** A refused edge certificate: reconnecting cannot fix it (the agent stops). */
export class TrustError extends TunnoxError {}

function sameFingerprint(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The agent's known_edges file: one `host:port sha256:<hex>` line per edge it trusted on first
 * use. Loaded once, appended to atomically (temp file + rename), mode 0600.
 */
export class KnownEdges {
  private entries: Map<string, string> | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  private async load(): Promise<Map<string, string>> {
    if (this.entries) return this.entries;
    const map = new Map<string, string>();
    let text = '';
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new TrustError('TNX_TLS_KNOWN_EDGES', `cannot read ${this.path}: ${(err as Error).message}`);
    }
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const [address, fp, extra] = line.split(/\s+/);
      let parsed: string | undefined;
      try {
        parsed = fp !== undefined && extra === undefined ? parseFingerprint(fp) : undefined;
      } catch {
        parsed = undefined;
      }
      if (!address || !parsed) throw new TrustError('TNX_TLS_KNOWN_EDGES', `${this.path} line ${i + 1} is invalid (expected "host:port sha256:<hex>"); fix or delete that line`);
      map.set(address, parsed);
    }
    this.entries = map;
    return map;
  }

  async get(address: string): Promise<string | undefined> {
    return (await this.load()).get(address);
  }

  /**
   * Records `address`'s fingerprint (first use). The file is read again first, so agents that share
   * a credentials folder (and so this file) keep each other's lines.
   */
  async add(address: string, fingerprint: string): Promise<void> {
    const mine = await this.load();
    this.entries = undefined;
    const map = await this.load();
    for (const [a, f] of mine) if (!map.has(a)) map.set(a, f);
    map.set(address, fingerprint);
    const text = '# edges this agent trusted on first use: host:port sha256:<certificate fingerprint>\n' + [...map].map(([a, f]) => `${a} ${f}\n`).join('');
    this.writing = this.writing.then(async () => {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const tmp = `${this.path}.${process.pid}.tmp`;
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, this.path);
    });
    await this.writing;
  }
}

/**
 * Checks a freshly connected TLS socket against `trust` (Node's own chain and host name check
 * ran with rejectUnauthorized off, its verdict is in socket.authorized). Resolves when the edge
 * is trusted; throws a TrustError naming what was expected and what came, and how to fix it.
 * A resumed session was verified when it was first made (tickets are kept only from trusted
 * connections) and presents the same certificate.
 */
/** How an edge was trusted: pinned, by a CA (system or --ca), recorded now (first use), or as recorded before. */
export type TrustVerdict = 'pinned' | 'ca' | 'first-use' | 'known' | 'resumed';

export async function verifyEdge(socket: TLSSocket, address: string, trust: TrustOptions): Promise<TrustVerdict> {
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.fingerprint256) {
    if (socket.isSessionReused()) return 'resumed';
    throw new TrustError('TNX_TLS_UNTRUSTED', `the edge ${address} presented no certificate`);
  }
  const got = formatFingerprint(cert.fingerprint256);
  if (trust.fingerprint !== undefined) {
    const want = parseFingerprint(trust.fingerprint);
    if (sameFingerprint(got, want)) return 'pinned';
    throw new TrustError(
      'TNX_TLS_FINGERPRINT_MISMATCH',
      `the edge ${address} presented a certificate with fingerprint ${got}, but --fingerprint pins ${want}: refusing to connect ` +
        '(a different edge, or its certificate changed: check the fingerprint the edge prints at start)',
    );
  }
  if (socket.authorized) return 'ca';
  if (trust.ca !== undefined) {
    throw new TrustError('TNX_TLS_UNTRUSTED', `the edge ${address} presented a certificate (${got}) that does not verify against --ca: ${String(socket.authorizationError)}`);
  }
  if (!trust.knownEdges) {
    throw new TrustError(
      'TNX_TLS_UNTRUSTED',
      `the edge ${address} presented a certificate (${got}) the system CAs do not vouch for (${String(socket.authorizationError)}); pass --ca FILE or --fingerprint ${got}`,
    );
  }
  const known = await trust.knownEdges.get(address);
  if (known === undefined) {
    await trust.knownEdges.add(address, got);
    return 'first-use';
  }
  if (sameFingerprint(known, got)) return 'known';
  throw new TrustError(
    'TNX_TLS_FINGERPRINT_CHANGED',
    `the certificate of the edge ${address} changed: ${trust.knownEdges.path} records ${known}, the edge now presents ${got}. ` +
      `Refusing to connect (someone may be intercepting the connection). If the edge's certificate really was replaced, ` +
      `delete the line for ${address} from ${trust.knownEdges.path} (or pass --fingerprint ${got})`,
  );
}
