import t from 'tap';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { eventually, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';
import { startCluster, type EdgeHandle } from './cluster-harness.js';
import { agent, makeCa, opensslFingerprint, refused, signedCert, WRONG_FINGERPRINT } from './tls-harness.js';

// The same trust rules in a cluster of role processes: every `tunnox edge` generates its own
// certificate into its data dir (or takes --tls-cert/--tls-key), and agents verify the edge they
// dial; tunnels bridged between edges are byte-exact.
const SIZE = 2 * 1024 * 1024;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('cluster: TLS edges with generated and CA-signed certificates; pins, first use, plaintext only where allowed', async (t) => {
  const dir = await tempDir('tnx-e2e-tls-cluster-');
  t.teardown(() => dir.remove());
  const cluster = await startCluster({ edges: ['127.0.0.1', '127.0.0.2'], name: 'tnx_tlscl' });
  t.teardown(() => cluster.close());
  const [e1, e2] = cluster.edges as [EdgeHandle, EdgeHandle];
  t.match(e1.fingerprint, /^sha256:[0-9a-f]{64}$/, 'each edge prints its fingerprint');
  t.not(e1.fingerprint, e2.fingerprint, 'each edge generated its own certificate');
  t.ok(e1.proc.lines.some((l) => l.includes('generated a self-signed TLS certificate')), 'on first start, into its data dir');

  const user = (await cluster.api('POST', '/api/v1/users', { username: 'tlsops', email: 'tlsops@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const procs: Proc[] = [];
  t.teardown(() => Promise.all(procs.map((p) => p.stop())));
  const spawn = (...args: Parameters<typeof agent>): Proc => {
    const p = agent(...args);
    procs.push(p);
    return p;
  };
  const online = (c: Client, edge: EdgeHandle): Promise<unknown> =>
    eventually(`client ${c.client_id} online on ${edge.nodeId}`, async () => {
      const r = (await cluster.api('GET', `/api/v1/clients/${c.client_id}`)).body;
      return r.status === 'online' && r.node_id === edge.nodeId;
    }, 30_000);

  // Source pinned to edge 1, target trusting edge 2 on first use; the tunnel crosses the bridge.
  const src = await client('source');
  const tgt = await client('target');
  spawn(e1.controlAddress, src, join(dir.path, 'src', 'creds.json'), ['--fingerprint', e1.fingerprint]);
  spawn(e2.controlAddress, tgt, join(dir.path, 'tgt', 'creds.json'));
  await online(src, e1);
  await online(tgt, e2);
  t.match(await readFile(join(dir.path, 'tgt', 'known_edges'), 'utf8'), `${e2.controlAddress} ${e2.fingerprint}\n`, 'edge 2 recorded on first use');
  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const localPort = await freePort();
  const m = await cluster.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: src.client_id, target_client_id: tgt.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  t.equal(m.status, 201);
  await eventually('mapping active', async () => (await cluster.api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active', 30_000);
  const results = await Promise.all(Array.from({ length: 5 }, () => transfer(localPort, SIZE, 120_000)));
  const exact = results.filter((r) => r.received === service.results.get(r.id)?.sent && service.results.get(r.id)?.received === r.sent).length;
  t.equal(exact, 5, 'TLS on both edges, bridged between them: 5 x 2 MiB each way, byte-exact');

  const other = await client('other');
  const pin = await refused(spawn(e1.controlAddress, other, join(dir.path, 'pin', 'creds.json'), ['--fingerprint', e2.fingerprint]));
  t.equal(pin.code, 1);
  t.match(pin.output, new RegExp(`fingerprint ${e1.fingerprint}, but --fingerprint pins ${e2.fingerprint}`), 'edge 2\'s pin at edge 1: refused, naming both');

  await mkdir(join(dir.path, 'changed'), { recursive: true });
  await writeFile(join(dir.path, 'changed', 'known_edges'), `${e2.controlAddress} ${WRONG_FINGERPRINT}\n`);
  const changed = await refused(spawn(e2.controlAddress, other, join(dir.path, 'changed', 'creds.json')));
  t.equal(changed.code, 1);
  t.match(changed.output, new RegExp(`certificate of the edge ${e2.controlAddress.replace(/\./g, '\\.')} changed: .* records ${WRONG_FINGERPRINT}, the edge now presents ${e2.fingerprint}`), 'a changed certificate: refused');

  const plain = await refused(spawn(`tcp://${e1.controlAddress}`, other, join(dir.path, 'plain', 'creds.json')));
  t.equal(plain.code, 1);
  t.match(plain.output, /this edge accepts TLS only/, 'plaintext refused by an edge without --allow-plaintext');

  // A third edge with a CA-signed certificate that also allows plaintext.
  const ca = await makeCa(dir.path, 'ca');
  const cert = await signedCert(dir.path, ca, 'edge3', '127.0.0.3');
  const e3 = await cluster.startEdge('127.0.0.3', ['--tls-cert', cert.cert, '--tls-key', cert.key, '--allow-plaintext']);
  t.equal(e3.fingerprint, await opensslFingerprint(cert.cert), 'edge 3 serves the given certificate');
  const viaCa = spawn(e3.controlAddress, other, join(dir.path, 'ca', 'creds.json'), ['--ca', ca.cert]);
  await online(other, e3);
  t.ok(await viaCa.waitForLog((e) => e.msg === 'edge certificate verified' && e.via === 'ca', 5_000), 'verified against --ca');
  await viaCa.stop();
  const third = await client('third');
  spawn(`tcp://${e3.controlAddress}`, third, join(dir.path, 'plain-ok', 'creds.json'));
  await online(third, e3);
  t.pass('plaintext where both ends allow it');
});
