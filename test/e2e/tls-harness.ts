import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { spawnTunnox, type Proc } from './harness.js';

const run = promisify(execFile);

/** A test CA made with the real openssl binary (scripts/ensure-services.sh installs it). */
export interface TestCa {
  cert: string;
  key: string;
}

export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key };
}

/** A server certificate for `ip` signed by `ca`. */
export async function signedCert(dir: string, ca: TestCa, name: string, ip: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  await writeFile(ext, `subjectAltName=IP:${ip},DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { cert, key };
}

/** `sha256:<hex>` of a PEM certificate, as openssl computes it. */
export async function opensslFingerprint(cert: string): Promise<string> {
  const { stdout } = await run('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', cert]);
  const m = /Fingerprint=([0-9A-F:]+)/i.exec(stdout);
  if (!m) throw new Error(`no fingerprint in: ${stdout}`);
  return `sha256:${m[1]!.replaceAll(':', '').toLowerCase()}`;
}

/** A different, well-formed fingerprint. */
export const WRONG_FINGERPRINT = `sha256:${'ab'.repeat(32)}`;

/** `tunnox client` for a managed client; the credentials file (and so known_edges) in `dir`. */
export function agent(server: string, c: { client_id: number; auth_code: string }, credentials: string, extra: string[] = [], env: Record<string, string> = {}): Proc {
  return spawnTunnox(['client', '--server', server, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', credentials, ...extra], env);
}

/** Waits for an agent that must give up: exit code 1 and its output. */
export async function refused(p: Proc): Promise<{ code: number | null; output: string }> {
  const timer = setTimeout(() => void p.stop(), 30_000);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, output: p.lines.join('\n') };
}
