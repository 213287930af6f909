import t, { type Test } from 'tap';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { pipeSockets, resetStream } from '../net/pipe.js';
import { startTinyproxy } from '../testkit/tinyproxy.js';
import { Acceptor } from './accept.js';
import { certFingerprint, generateSelfSigned, identityFrom, loadOrCreateIdentity, parseFingerprint, type TlsIdentity } from './cert.js';
import type { Conn } from './conn.js';
import { EdgeDialer } from './dial.js';
import { bypassesProxy, parseProxyUrl, proxyFor } from './proxy.js';
import { KnownEdges } from './trust.js';
import { parseEdgeUrl, WS_PATH } from './url.js';
import { WsAcceptor, type WsConn } from './ws.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function identity(): TlsIdentity {
  const m = generateSelfSigned(['127.0.0.1', 'localhost']);
  return identityFrom(m.cert, m.key, 'test');
}

/** One port serving all four transports, as the edge does: TCP/TLS on `port`, ws/wss on `wsPort`. */
async function endpoint(t: Test, id: TlsIdentity): Promise<{ port: number; wsPort: number; accepted: () => Promise<{ conn: Conn; secure: boolean }> }> {
  const queue: Array<{ conn: Conn; secure: boolean }> = [];
  const waiters: Array<(c: { conn: Conn; secure: boolean }) => void> = [];
  const all = new Set<Conn>();
  const push = (c: { conn: Conn; secure: boolean }): void => {
    c.conn.on('error', () => undefined);
    all.add(c.conn);
    const w = waiters.shift();
    if (w) w(c);
    else queue.push(c);
  };
  const tcp = new Acceptor({ host: '127.0.0.1', port: 0, tls: id, onConn: (conn, secure) => push({ conn, secure }) });
  await tcp.start();
  const wsAcceptor = new WsAcceptor(WS_PATH, (conn: WsConn) => push({ conn, secure: (conn.raw as { encrypted?: boolean }).encrypted === true }));
  const http = createHttpServer();
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => wsAcceptor.upgrade(req, socket, head));
  const ws = new Acceptor({ host: '127.0.0.1', port: 0, tls: id, onConn: (s) => void http.emit('connection', s) });
  await ws.start();
  t.teardown(async () => {
    tcp.destroyPending();
    ws.destroyPending();
    for (const c of all) c.destroy();
    await Promise.all([tcp.close(), ws.close()]);
  });
  return {
    port: tcp.port,
    wsPort: ws.port,
    accepted: () => {
      const c = queue.shift();
      return c ? Promise.resolve(c) : new Promise((r) => waiters.push(r));
    },
  };
}

function urlFor(scheme: string, e: { port: number; wsPort: number }): ReturnType<typeof parseEdgeUrl> {
  return parseEdgeUrl(`${scheme}://127.0.0.1:${scheme.startsWith('ws') ? e.wsPort : e.port}`, 8080);
}

/**
 * A connection over `url`, and its accepted end. The client speaks first (as an agent does: a
 * plaintext connection is told from TLS by its first byte), one byte the server end consumes.
 */
async function open(dialer: EdgeDialer, url: ReturnType<typeof parseEdgeUrl>, e: Awaited<ReturnType<typeof endpoint>>): Promise<{ client: Conn; server: Conn; secure: boolean }> {
  const client = await dialer.dial(url, 5_000).conn;
  client.write('h');
  const { conn: server, secure } = await e.accepted();
  for (;;) {
    const b = server.read(1) as Buffer | null;
    if (b) break;
    await new Promise((r) => server.once('readable', r));
  }
  return { client, server, secure };
}

/** Everything `c` delivers until its end; rejects if it is reset instead. */
function readAll(c: Conn): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    c.on('data', (d: Buffer) => chunks.push(d));
    c.once('end', () => resolve(Buffer.concat(chunks)));
    c.once('error', reject);
    c.once('close', () => reject(new Error('closed without end')));
  });
}

t.test('cert: a generated certificate is self-signed ECDSA P-256 for its names; fingerprints parse in both forms', async (t) => {
  const m = generateSelfSigned(['edge.example', '127.0.0.1', '::1']);
  const x = new X509Certificate(m.cert);
  t.ok(x.verify(x.publicKey), 'signed by its own key');
  t.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.match(x.subjectAltName ?? '', /DNS:edge\.example/);
  t.match(x.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  t.match(x.subjectAltName ?? '', /IP Address:0:0:0:0:0:0:0:1/);
  t.ok(x.checkHost('edge.example'), 'valid for its host name');
  t.ok(new Date(x.validTo).getTime() > Date.now() + 365 * 86_400_000, 'long-lived');
  const fp = certFingerprint(m.cert);
  t.match(fp, /^sha256:[0-9a-f]{64}$/);
  t.equal(parseFingerprint(x.fingerprint256), fp, 'the colon form openssl prints');
  t.equal(parseFingerprint(fp.toUpperCase().replace('SHA256', 'sha256')), fp, 'any case');
  for (const bad of ['', 'sha256:abc', 'md5:' + 'a'.repeat(64), fp + '00', 'sha256:' + 'g'.repeat(64)]) t.throws(() => parseFingerprint(bad), { message: /invalid fingerprint/ });
  t.throws(() => identityFrom(m.cert, generateSelfSigned([]).key, 'x'), { message: /does not belong/ }, 'a key of another certificate');
  // DER is strict (minimal integers): every one of many generated certificates must parse.
  let parsed = 0;
  for (let i = 0; i < 300; i++) {
    const g = generateSelfSigned(['127.0.0.1']);
    if (new X509Certificate(g.cert).verify(new X509Certificate(g.cert).publicKey)) parsed++;
  }
  t.equal(parsed, 300, '300 generated certificates all parse and verify');
});

t.test('cert: generated once into the data dir (key 0600) and reused; flags win', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-cert-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = await loadOrCreateIdentity({ dataDir: dir, names: ['127.0.0.1'] });
  t.ok(first.generated);
  t.equal((await stat(join(dir, 'tls-key.pem'))).mode & 0o777, 0o600);
  const again = await loadOrCreateIdentity({ dataDir: dir, names: ['127.0.0.1'] });
  t.notOk(again.generated);
  t.equal(again.fingerprint, first.fingerprint, 'the same certificate after a restart');
  const other = generateSelfSigned(['x']);
  await writeFile(join(dir, 'c.pem'), other.cert);
  await writeFile(join(dir, 'k.pem'), other.key);
  const given = await loadOrCreateIdentity({ dataDir: dir, names: [], certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') });
  t.equal(given.fingerprint, certFingerprint(other.cert));
  await t.rejects(loadOrCreateIdentity({ dataDir: dir, names: [], certFile: join(dir, 'c.pem') }), { message: /go together/ });
  await t.rejects(loadOrCreateIdentity({ dataDir: dir, names: [], certFile: join(dir, 'k.pem'), keyFile: join(dir, 'k.pem') }), { message: /not a PEM certificate/ });
});

t.test('proxy settings: URL forms, NO_PROXY matching, scheme choice', async (t) => {
  t.same(parseProxyUrl('http://127.0.0.1:3128'), { host: '127.0.0.1', port: 3128, authorization: undefined, text: 'http://127.0.0.1:3128' });
  t.equal(parseProxyUrl('http://u:p%40ss@proxy').authorization, `Basic ${Buffer.from('u:p@ss').toString('base64')}`);
  t.equal(parseProxyUrl('proxy:8080').port, 8080);
  t.throws(() => parseProxyUrl('socks5://p:1'), { message: /invalid proxy/ });
  t.ok(bypassesProxy('*', 'a', 1));
  t.ok(bypassesProxy('example.com', 'edge.example.com', 1), 'a domain covers its subdomains');
  t.ok(bypassesProxy('.example.com', 'example.com', 1));
  t.notOk(bypassesProxy('example.com', 'badexample.com', 1));
  t.ok(bypassesProxy('10.0.0.1, edge:8443', 'edge', 8443));
  t.notOk(bypassesProxy('edge:8443', 'edge', 8080), 'a port limits the entry');
  t.ok(bypassesProxy('[::1]', '::1', 1));
  const s = { httpsProxy: 'http://s:1', httpProxy: 'http://p:2', noProxy: 'skip' };
  t.equal(proxyFor(s, 'tls', 'e', 1)?.host, 's');
  t.equal(proxyFor(s, 'wss', 'e', 1)?.host, 's');
  t.equal(proxyFor(s, 'ws', 'e', 1)?.host, 'p');
  t.equal(proxyFor(s, 'tls', 'skip', 1), undefined, 'NO_PROXY');
  t.equal(proxyFor({ ...s, proxy: 'http://x:3' }, 'tls', 'skip', 1)?.host, 'x', '--proxy applies to every edge');
});

for (const scheme of ['tcp', 'tls', 'ws', 'wss'] as const) {
  t.test(`${scheme}: byte-exact both ways with half-close, through the pump`, async (t) => {
    const id = identity();
    const e = await endpoint(t, id);
    const dialer = new EdgeDialer({ trust: { fingerprint: id.fingerprint } });
    const { client, server, secure } = await open(dialer, urlFor(scheme, e), e);
    t.equal(secure, scheme === 'tls' || scheme === 'wss', 'TLS told from plaintext by the first byte');
    t.equal(typeof server.remotePort, 'number');
    // The server side echoes through the pump into a plain socket pair's far end: here, a relay
    // to a second connection of the same transport shows the pump over two Conns of this kind.
    const { client: client2, server: server2 } = await open(dialer, urlFor(scheme, e), e);
    const piped = pipeSockets(server, server2);
    const up = randomBytes(3 * 1024 * 1024 + 17);
    const down = randomBytes(2 * 1024 * 1024 + 5);
    const atFar = readAll(client2);
    client.end(up);
    t.equal(sha(await atFar), sha(up), 'the upload arrived whole, then its FIN');
    // The first direction is closed; the other still flows.
    const atNear = readAll(client);
    client2.end(down);
    t.equal(sha(await atNear), sha(down), 'the reply arrived whole after the half-close');
    const r = await piped;
    t.equal(r.error, undefined, 'a clean end on both sides');
    t.equal(r.bytesAtoB, up.length);
    t.equal(r.bytesBtoA, down.length);
  });

  t.test(`${scheme}: a reset is never a FIN, and backpressure holds`, async (t) => {
    const id = identity();
    const e = await endpoint(t, id);
    const dialer = new EdgeDialer({ trust: { fingerprint: id.fingerprint } });
    const { client, server } = await open(dialer, urlFor(scheme, e), e);
    // Nobody reads on the server: the writer is held back ('drain' stops coming) long before 64 MiB.
    server.pause();
    let written = 0;
    const chunk = Buffer.alloc(16 * 1024, 1);
    for (;;) {
      written += chunk.length;
      if (written > 64 * 1024 * 1024) break;
      if (client.write(chunk)) continue;
      const drained = await Promise.race([new Promise((r) => client.once('drain', () => r(true))), new Promise((r) => setTimeout(() => r(false), 500))]);
      if (!drained) break;
    }
    t.ok(written < 64 * 1024 * 1024, `the writer was held back after ${written} bytes`);
    const outcome = new Promise<string>((resolve) => {
      client.on('data', () => undefined);
      client.once('end', () => resolve('end'));
      client.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
    });
    resetStream(server);
    t.match(await outcome, /^error (ECONNRESET|EPIPE)$/, 'the peer sees a reset');
  });
}

t.test('trust: a pin mismatch and a changed certificate after first use are refused, naming both fingerprints', async (t) => {
  const id = identity();
  const e = await endpoint(t, id);
  const url = urlFor('tls', e);
  const wrong = identity().fingerprint;
  await t.rejects(new EdgeDialer({ trust: { fingerprint: wrong } }).dial(url, 5_000).conn, {
    code: 'TNX_TLS_FINGERPRINT_MISMATCH',
    message: new RegExp(`${id.fingerprint}.*${wrong}`),
  });
  await t.rejects(new EdgeDialer({ trust: {} }).dial(url, 5_000).conn, { code: 'TNX_TLS_UNTRUSTED', message: /system CAs/ }, 'no CA vouches, no TOFU file: refused');
  const dir = await mkdtemp(join(tmpdir(), 'tnx-known-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'known_edges');
  const verdicts: string[] = [];
  const tofu = new EdgeDialer({ trust: { knownEdges: new KnownEdges(path) }, onTrusted: (_a, v) => verdicts.push(v) });
  (await tofu.dial(url, 5_000).conn).destroy();
  t.same(verdicts, ['first-use']);
  t.match(await readFile(path, 'utf8'), `${url.address} ${id.fingerprint}\n`, 'recorded like known_hosts');
  // Another certificate at the same address: a new endpoint would get another port, so rewrite the record instead.
  await writeFile(path, `${url.address} ${wrong}\n`);
  await t.rejects(new EdgeDialer({ trust: { knownEdges: new KnownEdges(path) } }).dial(url, 5_000).conn, {
    code: 'TNX_TLS_FINGERPRINT_CHANGED',
    message: new RegExp(`records ${wrong}, the edge now presents ${id.fingerprint}.*delete the line for ${url.address.replace(/[.[\]]/g, '\\$&')} from`),
  });
});

t.test('tls: later connections resume the session from a ticket', async (t) => {
  const id = identity();
  const e = await endpoint(t, id);
  const dialer = new EdgeDialer({ trust: { fingerprint: id.fingerprint } });
  const url = urlFor('tls', e);
  const { client: c1, server: s1 } = await open(dialer, url, e);
  const first = c1 as import('node:tls').TLSSocket;
  t.notOk(first.isSessionReused());
  // The ticket arrives after the handshake, with the server's first write.
  s1.write('x');
  await new Promise((r) => first.once('data', r));
  await new Promise((r) => setTimeout(r, 20));
  const second = (await dialer.dial(url, 5_000).conn) as import('node:tls').TLSSocket;
  t.ok(second.isSessionReused(), 'resumed');
  first.destroy();
  second.destroy();
});

t.test('proxy: every transport through a real tinyproxy (HTTP CONNECT)', async (t) => {
  const proxy = await startTinyproxy();
  t.teardown(() => proxy.stop());
  const id = identity();
  const e = await endpoint(t, id);
  const dialer = new EdgeDialer({ trust: { fingerprint: id.fingerprint }, proxy: { proxy: proxy.url } });
  for (const scheme of ['tcp', 'tls', 'ws', 'wss'] as const) {
    const url = urlFor(scheme, e);
    const { client, server } = await open(dialer, url, e);
    const data = randomBytes(500_000);
    const got = readAll(server);
    client.end(data);
    t.comment(`${scheme} dialed`);
    t.equal(sha(await got), sha(data), `${scheme}: byte-exact through the proxy`);
    server.end();
    client.resume();
  }
  const connects = await proxy.connects();
  t.ok(connects.filter((c) => c === `127.0.0.1:${e.port}`).length >= 2 && connects.includes(`127.0.0.1:${e.wsPort}`), `the proxy carried them (${connects.join(' ')})`);
  const refused = new EdgeDialer({ trust: {}, proxy: { proxy: `http://127.0.0.1:${e.port}` } });
  await t.rejects(refused.dial(parseEdgeUrl('tcp://127.0.0.1:1', 8080), 2_000).conn, { message: /proxy http:\/\/127\.0\.0\.1:\d+/ }, 'a proxy that does not answer CONNECT is named');
});

t.test('acceptor: a connection that never sends its first byte is closed after the timeout', async (t) => {
  const acc = new Acceptor({ host: '127.0.0.1', port: 0, tls: identity(), firstByteTimeoutMs: 200, onConn: (c) => c.destroy() });
  await acc.start();
  t.teardown(() => acc.close());
  const { connect } = await import('node:net');
  const started = Date.now();
  const s = connect({ host: '127.0.0.1', port: acc.port });
  s.on('error', () => undefined);
  await new Promise((r) => s.once('close', r));
  const ms = Date.now() - started;
  t.ok(ms >= 150 && ms < 5_000, `closed after ${ms} ms (timeout 200 ms, swept by one shared timer)`);
});
