import t from 'tap';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { startTinyproxy } from '../../shared/testkit/tinyproxy.js';
import { canConnect, eventually, startServer, startTransferTarget, tempDir, transfer, type Proc } from './harness.js';
import { agent, refused } from './tls-harness.js';

// Agents behind HTTP-only egress: the same protocol over WebSocket (wss:// on --ws-port, path
// /tunnox), directly and through a real HTTP proxy (tinyproxy, CONNECT), with byte-exact
// transfers that half-close.
const SIZE = 2 * 1024 * 1024;

interface Client {
  client_id: number;
  auth_code: string;
}

t.test('WebSocket: wss agents directly and through tinyproxy; ws:// refused without --allow-plaintext', async (t) => {
  const dir = await tempDir('tnx-e2e-ws-');
  t.teardown(() => dir.remove());
  const proxy = await startTinyproxy();
  t.teardown(() => proxy.stop());
  const wsPort = await freePort();
  const rangeStart = 20000 + Math.floor(Math.random() * 12000);
  const server = await startServer(
    ['--data-dir', join(dir.path, 'data'), '--ws-port', String(wsPort), '--public-port-range', `${rangeStart}-${rangeStart + 20}`],
    'e2e-admin-key-0123456789abcdef',
  );
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    await server.proc.stop();
  });
  t.ok(await eventually('the banner', async () => server.proc.lines.some((l) => l.includes(`wss://127.0.0.1:${wsPort}/tunnox`))), 'the banner names the WebSocket endpoint');
  const url = `wss://127.0.0.1:${wsPort}/tunnox`;
  const fp = ['--fingerprint', server.fingerprint];

  const user = (await server.api('POST', '/api/v1/users', { username: 'ws', email: 'ws@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<Client> => (await server.api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const online = (c: Client): Promise<unknown> =>
    eventually(`client ${c.client_id} online`, async () => (await server.api('GET', `/api/v1/clients/${c.client_id}`)).body.status === 'online', 30_000);
  const spawn = (...args: Parameters<typeof agent>): Proc => {
    const p = agent(...args);
    procs.push(p);
    return p;
  };

  const target = await client('target');
  const source = await client('source');
  // The target directly; the source through the proxy, once by --proxy, once by HTTPS_PROXY.
  spawn(url, target, join(dir.path, 'target.json'), fp);
  spawn(url, source, join(dir.path, 'source.json'), [...fp, '--proxy', proxy.url]);
  await online(target);
  await online(source);

  const service = await startTransferTarget(SIZE);
  t.teardown(() => service.close());
  const exact = (results: Awaited<ReturnType<typeof transfer>>[]): number =>
    results.filter((r) => r.received === service.results.get(r.id)?.sent && service.results.get(r.id)?.received === r.sent).length;

  const pub = await server.api('POST', '/api/v1/mappings', { user_id: user, target_client_id: target.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port });
  t.equal(pub.status, 201);
  const publicPort = Number(pub.body.public_port);
  await eventually('public port open', () => canConnect(publicPort));
  await eventually('public mapping active', async () => (await server.api('GET', `/api/v1/mappings/${pub.body.mapping_id}`)).body.status === 'active', 30_000);
  t.equal(exact(await Promise.all(Array.from({ length: 5 }, () => transfer(publicPort, SIZE)))), 5, 'public mapping, target over wss: 5 x 2 MiB each way, byte-exact, half-closed');

  const localPort = await freePort();
  const c2c = await server.api('POST', '/api/v1/mappings', {
    user_id: user, source_client_id: source.client_id, target_client_id: target.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: service.port, local_port: localPort,
  });
  t.equal(c2c.status, 201);
  await eventually('c2c mapping active', async () => (await server.api('GET', `/api/v1/mappings/${c2c.body.mapping_id}`)).body.status === 'active', 30_000);
  t.equal(exact(await Promise.all(Array.from({ length: 5 }, () => transfer(localPort, SIZE)))), 5, 'client-to-client, the source over wss through the proxy: byte-exact');
  const connects = await proxy.connects();
  t.ok(connects.filter((c) => c === `127.0.0.1:${wsPort}`).length >= 6, `the proxy carried the control and tunnel connections (${connects.length} CONNECTs)`);

  // The environment's proxy, as an agent on a locked-down host gets it.
  const third = await client('third');
  const before = connects.length;
  spawn(url, third, join(dir.path, 'third.json'), fp, { HTTPS_PROXY: proxy.url, NO_PROXY: 'example.invalid' });
  await online(third);
  t.ok((await proxy.connects()).length > before, 'HTTPS_PROXY is honoured');

  const plain = await refused(spawn(`ws://127.0.0.1:${wsPort}/tunnox`, third, join(dir.path, 'plain.json')));
  t.equal(plain.code, 1, 'ws:// to an edge without --allow-plaintext is fatal');
  t.match(plain.output, /HTTP 403 this edge accepts wss:\/\/ \(TLS\) only/, 'with the edge\'s reason');
});
