import t from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { PacketType } from '../../shared/wire/packets.js';
import { canConnect, eventually, sleep, spawnTunnox, startServer, startTransferTarget, tempDir, transfer } from './harness.js';
import { acceptedOn, fdCount, privateLoopback } from './procfs.js';

/**
 * Slowloris on the control port (issue 7): hundreds of connections that never send, or trickle a
 * first frame that never completes, are each closed within 10 s of their connect, while a real
 * agent still logs in and carries a byte-exact tunnel; afterwards the server's fds are back to
 * their baseline.
 */

const MiB = 1024 * 1024;

t.test('slowloris on the control port: every unfinished handshake is closed within 10 s, a real agent still tunnels', async (t) => {
  const dir = await tempDir('tnx-slowloris');
  t.teardown(() => dir.remove());
  const host = privateLoopback();
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--control-host', host], `key-${randomBytes(12).toString('hex')}`);
  t.teardown(() => server.proc.stop());
  const pid = server.proc.child.pid!;
  const { api } = server;
  const user = (await api('POST', '/api/v1/users', { username: 'loris', email: 'loris@example.com' })).body.user_id as number;
  const client = (await api('POST', '/api/v1/clients', { user_id: user, client_name: 'legit' })).body as { client_id: number; auth_code: string };
  await sleep(1_000);
  const baseline = fdCount(pid);

  // Three kinds, 200 each: silent; a Handshake header announcing 3000 bytes, then a byte every
  // 500 ms; a complete header and half a JSON body, then nothing. None ever completes a frame.
  const PER_KIND = 200;
  const kinds = ['silent', 'trickle', 'stalled'] as const;
  const closes: Promise<{ kind: string; ms: number; byPeer: boolean }>[] = [];
  const sockets: Socket[] = [];
  const timers: NodeJS.Timeout[] = [];
  t.teardown(() => {
    for (const x of timers) clearInterval(x);
    for (const s of sockets) s.destroy();
  });
  const header = (len: number): Buffer => {
    const b = Buffer.alloc(5);
    b[0] = PacketType.Handshake;
    b.writeUInt32BE(len, 1);
    return b;
  };
  for (const kind of kinds) {
    for (let i = 0; i < PER_KIND; i++) {
      const s = connect({ host, port: server.controlPort });
      sockets.push(s);
      s.on('error', () => undefined);
      const connectedAt = new Promise<number>((r) => s.once('connect', () => r(Date.now())));
      closes.push(
        new Promise((resolve) => {
          s.once('close', () => void connectedAt.then((at) => resolve({ kind, ms: Date.now() - at, byPeer: true })));
        }),
      );
      s.once('connect', () => {
        if (kind === 'trickle') {
          s.write(header(3000));
          const x = setInterval(() => {
            if (!s.destroyed) s.write('{');
          }, 500);
          timers.push(x);
          s.once('close', () => clearInterval(x));
        } else if (kind === 'stalled') {
          s.write(Buffer.concat([header(80), Buffer.from('{"protocol_version":1,"client_versi')]));
        }
      });
    }
    await sleep(100);
  }
  await eventually('the crowd connected', async () => acceptedOn(pid, [server.controlPort]).length >= kinds.length * PER_KIND, 10_000);

  // Meanwhile a real agent logs in and a tunnel through it carries a byte-exact transfer.
  const target = await startTransferTarget(2 * MiB);
  t.teardown(() => target.close());
  const agent = spawnTunnox(['client', '--server', `${host}:${server.controlPort}`, '--client-id', String(client.client_id), '--auth-code', client.auth_code, '--credentials', join(dir.path, 'agent.json')]);
  t.teardown(() => agent.stop());
  await eventually('the real agent is online', async () => (await api('GET', `/api/v1/clients/${client.client_id}`)).body.status === 'online', 30_000);
  const m = await api('POST', '/api/v1/mappings', { user_id: user, target_client_id: client.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: target.port });
  t.equal(m.status, 201);
  await eventually('public port open', () => canConnect(m.body.public_port as number));
  await eventually('mapping active', async () => (await api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body.status === 'active', 30_000);
  const r = await transfer(m.body.public_port as number, 2 * MiB);
  const seen = target.results.get(r.id);
  t.equal(seen?.received, r.sent, 'upload byte-exact');
  t.equal(r.received, seen?.sent, 'download byte-exact');

  const results = await Promise.all(closes);
  for (const kind of kinds) {
    const mine = results.filter((x) => x.kind === kind);
    const worst = Math.max(...mine.map((x) => x.ms));
    t.equal(mine.length, PER_KIND);
    // The edge's 10 s first-frame deadline, plus scheduling slack on a loaded 2-core machine.
    t.ok(worst <= 12_000, `${kind}: all ${PER_KIND} closed by the edge, the last ${worst} ms after its connect`);
    t.ok(Math.min(...mine.map((x) => x.ms)) >= 9_000, `${kind}: none closed before the 10 s deadline`);
  }
  await eventually(`server fds back to the baseline of ${baseline} plus the agent's session`, async () => fdCount(pid) <= baseline + 2, 10_000);
  t.equal(acceptedOn(pid, [server.controlPort]).length, 1, 'only the real agent remains on the control port');
});
