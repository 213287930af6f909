import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { TunnoxError } from '../platform/errors.js';

/** The edge's TLS certificate and key (PEM), and the certificate's SHA-256 fingerprint. */
export interface TlsIdentity {
  readonly cert: string;
  readonly key: string;
  /** `sha256:` and 64 lower-case hex digits: what agents pin with --fingerprint and record on first use. */
  readonly fingerprint: string;
}

/** Certificate and key file names of a generated identity in a data dir. */
export const GENERATED_CERT_FILE = 'tls-cert.pem';
export const GENERATED_KEY_FILE = 'tls-key.pem';

/** `sha256:<hex>` of a PEM or DER certificate. */
export function certFingerprint(cert: string | Buffer): string {
  return formatFingerprint(new X509Certificate(cert).fingerprint256);
}

/** `AB:CD:...` (Node's fingerprint256) → `sha256:abcd...`. */
export function formatFingerprint(colonHex: string): string {
  return `sha256:${colonHex.replaceAll(':', '').toLowerCase()}`;
}

/**
 * Parses what --fingerprint accepts: `sha256:` (optional) and 64 hex digits, with or without
 * colons (as `openssl x509 -fingerprint -sha256` prints them), any case. Throws naming the value otherwise.
 */
export function parseFingerprint(value: string): string {
  const m = /^(?:sha256:)?((?:[0-9a-f]{2}:?){31}[0-9a-f]{2})$/i.exec(value.trim());
  if (!m) throw new Error(`invalid fingerprint "${value}": expected sha256: and 64 hex digits (the edge prints it at start)`);
  return `sha256:${m[1]!.replaceAll(':', '').toLowerCase()}`;
}

// --- A minimal DER writer: just what one self-signed X.509 v3 certificate needs. ---

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}
const seq = (...c: Buffer[]): Buffer => der(0x30, ...c);
function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const b: number[] = [p & 0x7f];
    for (let v = p >>> 7; v > 0; v >>>= 7) b.unshift(0x80 | (v & 0x7f));
    out.push(...b);
  }
  return der(0x06, Buffer.from(out));
}
function generalizedTime(d: Date): Buffer {
  const s = d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
  return der(0x18, Buffer.from(s, 'ascii'));
}
function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  // Expand :: and write eight 16-bit groups.
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return out;
}

const ECDSA_WITH_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/**
 * A self-signed ECDSA P-256 certificate for `names` (DNS names and IP addresses, the first also
 * the common name), valid from an hour ago for `days`. Built with node:crypto alone (no openssl
 * binary needed in the image). Returns PEM certificate and PKCS#8 PEM key.
 */
export function generateSelfSigned(names: readonly string[], days = 3650): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const cn = names[0] ?? 'tunnox-edge';
  const name = seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from(cn, 'utf8')))));
  const serial = randomBytes(16);
  // Positive and minimally encoded: DER allows no leading zero byte (OpenSSL refuses one).
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const now = Date.now();
  const san = seq(...names.map((n) => (isIP(n) ? der(0x87, ipBytes(n)) : der(0x82, Buffer.from(n, 'ascii')))));
  const extensions = der(
    0xa3,
    seq(
      seq(oid('2.5.29.19'), der(0x01, Buffer.from([0xff])), der(0x04, seq())), // basicConstraints, critical, not a CA
      seq(oid('2.5.29.15'), der(0x01, Buffer.from([0xff])), der(0x04, der(0x03, Buffer.from([0x07, 0x80])))), // keyUsage digitalSignature
      seq(oid('2.5.29.37'), der(0x04, seq(oid('1.3.6.1.5.5.7.3.1')))), // extKeyUsage serverAuth
      ...(names.length > 0 ? [seq(oid('2.5.29.17'), der(0x04, san))] : []),
    ),
  );
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))), // v3
    der(0x02, serial),
    ECDSA_WITH_SHA256,
    name,
    seq(generalizedTime(new Date(now - 3_600_000)), generalizedTime(new Date(now + days * 86_400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    extensions,
  );
  const signature = sign('sha256', tbs, privateKey);
  const certDer = seq(tbs, ECDSA_WITH_SHA256, der(0x03, Buffer.from([0]), signature));
  const b64 = certDer.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return { cert: `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** Checks that `cert` and `key` are a usable pair; returns the identity. Throws a TunnoxError naming `where`. */
export function identityFrom(cert: string, key: string, where: string): TlsIdentity {
  let x509: X509Certificate;
  let keyObj: KeyObject;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TunnoxError('TNX_TLS_CERT_INVALID', `${where}: not a PEM certificate (${(err as Error).message})`);
  }
  try {
    keyObj = createPrivateKey(key);
  } catch (err) {
    throw new TunnoxError('TNX_TLS_CERT_INVALID', `${where}: not a PEM private key (${(err as Error).message})`);
  }
  if (!x509.checkPrivateKey(keyObj)) throw new TunnoxError('TNX_TLS_CERT_INVALID', `${where}: the private key does not belong to the certificate`);
  return { cert, key, fingerprint: formatFingerprint(x509.fingerprint256) };
}

/**
 * The edge's TLS identity: from `certFile`/`keyFile` when given (both or neither), else the one
 * generated into `dataDir` on first start (kept there, key 0600) and reused afterwards.
 * `names` go into a generated certificate's subjectAltName.
 */
export async function loadOrCreateIdentity(o: { certFile?: string | undefined; keyFile?: string | undefined; dataDir: string; names: readonly string[] }): Promise<TlsIdentity & { generated: boolean; certPath: string }> {
  if ((o.certFile === undefined) !== (o.keyFile === undefined)) {
    throw new TunnoxError('TNX_TLS_CERT_INVALID', '--tls-cert and --tls-key go together');
  }
  if (o.certFile !== undefined && o.keyFile !== undefined) {
    const [cert, key] = await Promise.all([readFile(o.certFile, 'utf8'), readFile(o.keyFile, 'utf8')]).catch((err: unknown) => {
      throw new TunnoxError('TNX_TLS_CERT_INVALID', `cannot read the TLS certificate or key: ${(err as Error).message}`);
    });
    return { ...identityFrom(cert, key, `${o.certFile} / ${o.keyFile}`), generated: false, certPath: o.certFile };
  }
  const certPath = join(o.dataDir, GENERATED_CERT_FILE);
  const keyPath = join(o.dataDir, GENERATED_KEY_FILE);
  let existing: [string, string] | undefined;
  try {
    existing = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing) return { ...identityFrom(existing[0], existing[1], `${certPath} / ${keyPath}`), generated: false, certPath };
  const made = generateSelfSigned(o.names);
  await mkdir(o.dataDir, { recursive: true, mode: 0o700 });
  // Key first, each atomically: a crash in between leaves no certificate without its key.
  for (const [path, text, mode] of [[keyPath, made.key, 0o600], [certPath, made.cert, 0o644]] as const) {
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, text, { mode });
    await chmod(tmp, mode);
    await rename(tmp, path);
  }
  return { ...identityFrom(made.cert, made.key, certPath), generated: true, certPath };
}
