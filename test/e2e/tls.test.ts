import t from 'tap';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { eventually, startServer, startTransferTarget, tempDir, transfer, type Proc, type ServerHandle } from './harness.js';
import { agent, makeCa, opensslFingerprint, refused, signedCert, WRONG_FINGERPRINT } from './tls-harness.js';

// `tunnox server` as a user runs it over the internet: TLS 1.3 on the control port by default, the
// agent verifying the edge by CA, by pinned fingerprint or on first use, and plaintext only when
// both ends ask for it.
const SIZE = 2 * 1024 * 1024;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('standalone: TLS by default; CA, pin and first-use trust; changed certificates and plaintext refused', async (t) => {
  const dir = await tempDir('tnx-e2e-tls-');
  t.teardown(() => dir.remove());
  const ca = await makeCa(dir.path, 'test-ca');
  const otherCa = await makeCa(dir.path, 'other-ca');
  const cert = await signedCert(dir.path, ca, 'edge', '127.0.0.1');
  const dataDir = join(dir.path, 'data');
  const serverArgs = ['--data-dir', dataDir, '--tls-cert', cert.cert, '--tls-key', cert.key];
  let server: ServerHandle = await startServer(serverArgs, 'e2e-admin-key-0123456789abcdef');
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    await server.proc.stop();
  });
  const fp = await opensslFingerprint(cert.cert);
  t.equal(server.fingerprint, fp, 'the server logs the SHA-256 fingerprint of its certificate');
  t.ok(await eventually('the banner', async () => server.proc.lines.some((l) => l.includes(`TLS fingerprint: ${fp}`))), 'and prints it in its banner');
  const addr = (): string => `127.0.0.1:${server.controlPort}`;

  const user = (await server.api('POST', '/api/v1/users', { username: 'tls', email: 'tls@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await server.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const online = (c: Client): Promise<unknown> =>
    eventually(`client ${c.client_id} online`, async () => (await server.api('GET', `/api/v1/clients/${c.client_id}`)).body.status === 'online', 30_000);
  const spawn = (...args: Parameters<typeof agent>): Proc => {
    const p = agent(...args);
    procs.push(p);
    return p;
  };

  // The target verifies the edge against the test CA; the source trusts it on first use.
  const target = await client('target');
  const source = await client('source');
  const targetAgent = spawn(addr(), target, join(dir.path, 'target', 'creds.json'), ['--ca', ca.cert]);
  await mkdir(join(dir.path, 'source'), { recursive: true });
  const sourceAgent = spawn(addr(), source, join(dir.path, 'source', 'creds.json'));
  await online(target);
  await online(source);
  t.ok(await targetAgent.waitForLog((e) => e.msg === 'edge certificate verified' && e.via === 'ca', 5_000), '--ca: the chain verified');
  t.ok(await sourceAgent.waitForLog((e) => /trusting the edge certificate on first use/.test(String(e.msg)), 5_000), 'no CA: trusted on first use, with a warning');
  const knownEdges = join(dir.path, 'source', 'known_edges');
  t.match(await readFile(knownEdges, 'utf8'), `${addr()} ${fp}\n`, 'recorded beside the credentials, like known_hosts');

  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const localPort = await freePort();
  const m = await server.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: source.client_id, target_client_id: target.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  t.equal(m.status, 201);
  await eventually('mapping active', async () => (await server.api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active', 30_000);
  const results = await Promise.all(Array.from({ length: 5 }, () => transfer(localPort, SIZE)));
  const exact = results.filter((r) => r.received === service.results.get(r.id)?.sent && service.results.get(r.id)?.received === r.sent).length;
  t.equal(exact, 5, 'tunnels over TLS: 5 connections x 2 MiB each way, byte-exact, with half-close');

  const other = await client('other');
  const pinned = await refused(spawn(addr(), other, join(dir.path, 'pin', 'creds.json'), ['--fingerprint', WRONG_FINGERPRINT]));
  t.equal(pinned.code, 1, 'a pin mismatch is fatal');
  t.match(pinned.output, new RegExp(`presented a certificate with fingerprint ${fp}, but --fingerprint pins ${WRONG_FINGERPRINT}`), 'naming both fingerprints');
  const good = spawn(addr(), other, join(dir.path, 'pin-ok', 'creds.json'), ['--fingerprint', fp.toUpperCase().replace('SHA256:', 'sha256:')]);
  await online(other);
  t.ok(await good.waitForLog((e) => e.msg === 'edge certificate verified' && e.via === 'pinned', 5_000), 'the right pin connects');
  await good.stop();

  const wrongCa = await refused(spawn(addr(), other, join(dir.path, 'ca2', 'creds.json'), ['--ca', otherCa.cert]));
  t.equal(wrongCa.code, 1);
  t.match(wrongCa.output, /does not verify against --ca/, 'a certificate of another CA is refused');

  await mkdir(join(dir.path, 'changed'), { recursive: true });
  await writeFile(join(dir.path, 'changed', 'known_edges'), `${addr()} ${WRONG_FINGERPRINT}\n`);
  const changed = await refused(spawn(addr(), other, join(dir.path, 'changed', 'creds.json')));
  t.equal(changed.code, 1, 'a certificate that changed since first use is fatal');
  t.match(changed.output, new RegExp(`records ${WRONG_FINGERPRINT}, the edge now presents ${fp}`), 'naming both fingerprints');
  t.match(changed.output, new RegExp(`delete the line for 127\\.0\\.0\\.1:${server.controlPort} from .*known_edges`), 'and how to reset');

  const plain = await refused(spawn(`tcp://${addr()}`, other, join(dir.path, 'plain', 'creds.json')));
  t.equal(plain.code, 1, 'tcp:// to an edge without --allow-plaintext is fatal');
  t.match(plain.output, /refused plaintext: this edge accepts TLS only/, 'with the reason');
  t.ok(await server.proc.waitForLog((e) => /connection refused: plaintext/.test(String(e.msg)), 5_000), 'and the edge logs the refusal');

  // Both ends allow plaintext: it works, with a warning on each side.
  for (const p of procs) await p.stop();
  await server.proc.stop();
  server = await startServer([...serverArgs, '--allow-plaintext'], 'e2e-admin-key-0123456789abcdef');
  t.ok(server.proc.lines.some((l) => l.includes('--allow-plaintext: agents may connect without TLS')), 'the edge warns about --allow-plaintext');
  const plainOk = spawn(`tcp://${addr()}`, other, join(dir.path, 'plain-ok', 'creds.json'));
  await online(other);
  t.ok(plainOk.lines.some((l) => l.includes('plaintext connection to the edge')), 'the agent warns about tcp://');
  const tlsStill = spawn(addr(), target, join(dir.path, 'target', 'creds.json'), ['--ca', ca.cert]);
  await online(target);
  t.ok(await tlsStill.waitForLog((e) => e.msg === 'edge certificate verified', 5_000), 'TLS agents share the port with plaintext ones');
});
