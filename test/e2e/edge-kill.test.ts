import t from 'tap';
import { join } from 'node:path';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import {
  clusterServerArgs,
  deleteStreams,
  eventually,
  freePort,
  spawnTunnox,
  startServer,
  streamEnd,
  tempDir,
  type Proc,
  type ServerHandle,
  type StreamEnd,
} from './harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Writes 64 KiB every 10 ms (about 6 MB/s: still running when the edge is killed), at most
 * `maxBytes`, never queueing more than 1 MiB; stops when the socket closes.
 */
function pace(socket: Socket, maxBytes = 256 * MiB): void {
  const chunk = randomBytes(64 * KiB);
  let sent = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || sent >= maxBytes) return void clearInterval(timer);
    if (socket.writableLength > MiB) return;
    socket.write(chunk);
    sent += chunk.length;
  }, 10);
  socket.once('close', () => clearInterval(timer));
}

/** A service whose every connection either only reads ('sink') or only writes ('stream'); records how each ended. */
async function service(kind: 'sink' | 'stream'): Promise<{ port: number; conns: { socket: Socket; end: Promise<StreamEnd> }[]; server: Server }> {
  const conns: { socket: Socket; end: Promise<StreamEnd> }[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    conns.push({ socket, end: streamEnd(socket) });
    if (kind === 'stream') pace(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, conns, server };
}

/** Bounded: a missing end must fail the test, not hang it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no end within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Issue 6, "when an edge is killed with -9, its tunnels end with a reset at the other end, never a
 * silent truncation". Two `tunnox server` processes in JetStream mode share one stream and one
 * database and bridge tunnels to each other. Agent X sits on server A, agent Y on server B, with
 * one client-to-client mapping each way, each carrying a long one-way transfer. Server B is
 * killed with SIGKILL mid-transfer. B's kernel then sends FIN (not RST: B had nothing unread from
 * Y, whose halves only receive) on Y's tunnel connections, which Y must not pass on as a clean end.
 * All four local peers must see a reset:
 * - behind Y (its edge died): the upload's target service and the download's visitor, reset by Y
 *   because B never vouched for those FINs (edge → agent TunnelEnd);
 * - behind X (its edge survives): the upload's visitor and the download's target service, reset
 *   across the lost bridge by A.
 */
t.test('kill -9 of the edge holding an agent: every local peer of its running tunnels sees a reset', async (t) => {
  const database = await createTestDatabase('tnx_e2e_kill', false);
  const stream = uniqueName('TNX_E2EK').toUpperCase();
  const dir = await tempDir('tnx-e2e-kill');
  const sink = await service('sink');
  const streamer = await service('stream');
  const procs: Proc[] = [];
  const servers: ServerHandle[] = [];
  const visitors: Socket[] = [];
  t.teardown(async () => {
    for (const v of visitors) v.destroy();
    for (const p of procs) await p.stop();
    for (const s of servers) await s.proc.stop();
    for (const svc of [sink, streamer]) {
      for (const c of svc.conns) c.socket.destroy();
      svc.server.close();
    }
    await deleteStreams(stream);
    await database.drop();
    await dir.remove();
  });
  const args = (n: number) => clusterServerArgs({ dataDir: dir.path, database: database.url, stream, secret: 'edge-kill-cluster-secret-0123456789' }, n);
  const apiKey = 'edge-kill-admin-key-0123456789';
  // One after the other: the first one migrates the shared database.
  const a = await startServer(args(1), apiKey);
  servers.push(a);
  const b = await startServer(args(2), apiKey);
  servers.push(b);

  const user = (await a.api('POST', '/api/v1/users', { username: 'kill', email: 'kill@example.com' })).body.user_id as number;
  const x = (await a.api('POST', '/api/v1/clients', { user_id: user, client_name: 'x' })).body as { client_id: number; auth_code: string };
  const y = (await a.api('POST', '/api/v1/clients', { user_id: user, client_name: 'y' })).body as { client_id: number; auth_code: string };
  const agent = (c: { client_id: number; auth_code: string }, server: ServerHandle, name: string): Proc =>
    spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(c.client_id), '--auth-code', c.auth_code, '--credentials', join(dir.path, `${name}.json`)]);
  procs.push(agent(x, a, 'x'), agent(y, b, 'y'));
  for (const c of [x, y]) await eventually(`client ${c.client_id} online`, async () => (await a.api('GET', `/api/v1/clients/${c.client_id}`)).body.status === 'online');

  const mapping = async (source: number, target: number, targetPort: number): Promise<number> => {
    const localPort = await freePort();
    const res = await a.api('POST', '/api/v1/mappings', {
      user_id: user, source_client_id: source, target_client_id: target, protocol: 'tcp', target_host: '127.0.0.1', target_port: targetPort, local_port: localPort,
    });
    t.equal(res.status, 201, `mapping ${source} → ${target} created`);
    await eventually('mapping active', async () => (await a.api('GET', `/api/v1/mappings/${res.body.mapping_id}`)).body.status === 'active');
    return localPort;
  };
  const uploadPort = await mapping(x.client_id, y.client_id, sink.port); // visitor at X (A) → service behind Y (B)
  const downloadPort = await mapping(y.client_id, x.client_id, streamer.port); // visitor at Y (B) ← service behind X (A)

  const visit = (port: number): { socket: Socket; end: Promise<StreamEnd> } => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    socket.on('error', () => undefined);
    visitors.push(socket);
    return { socket, end: streamEnd(socket) };
  };
  const uploader = visit(uploadPort);
  pace(uploader.socket);
  const downloader = visit(downloadPort);
  let downloaded = 0;
  downloader.socket.on('data', (c: Buffer) => (downloaded += c.length));
  await eventually('both transfers running', async () => (sink.conns[0]?.socket.bytesRead ?? 0) >= MiB && downloaded >= MiB);

  b.proc.child.kill('SIGKILL');
  await b.proc.exited;
  const [uploadAtService, downloadAtVisitor, uploadAtVisitor, downloadAtService] = await Promise.all([
    within(sink.conns[0]!.end, 15_000, 'upload, at the service behind Y'),
    within(downloader.end, 15_000, 'download, at the visitor at Y'),
    within(uploader.end, 15_000, 'upload, at the visitor at X'),
    within(streamer.conns[0]!.end, 15_000, 'download, at the service behind X'),
  ]);
  const RESET = { how: 'reset', code: /^(ECONNRESET|EPIPE)$/ };
  t.match(uploadAtService, RESET, `the service behind the killed edge's agent sees a reset after ${(uploadAtService.bytes / MiB).toFixed(1)} MiB, not a clean end of a truncated upload`);
  t.match(downloadAtVisitor, RESET, `the visitor at the killed edge's agent sees a reset after ${(downloadAtVisitor.bytes / MiB).toFixed(1)} MiB, not a clean end of a truncated download`);
  t.match(uploadAtVisitor, RESET, 'the uploading visitor on the surviving edge\'s side sees a reset');
  t.match(downloadAtService, RESET, 'the streaming service on the surviving edge\'s side sees a reset');
  t.equal(a.proc.child.exitCode, null, 'server A still running');
});
