import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { FrameDecoder, encodeFrame } from '../wire/codec.js';
import { encodeMessage } from '../wire/messages.js';
import { PacketType } from '../wire/packets.js';
import { ControlChannel } from './control.js';
import { ByteBudget, closeAfterFlush, readFirstFrame } from './frames.js';

async function socketPair(t: Test): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const client = connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, allowHalfOpen: true });
  await new Promise((r) => client.once('connect', r));
  const s = await accepted;
  server.close();
  for (const x of [client, s]) x.on('error', () => undefined);
  t.teardown(() => {
    client.destroy();
    s.destroy();
  });
  return [client, s];
}

t.test('readFirstFrame returns the first frame and leaves raw bytes after it untouched', async (t) => {
  const [c, s] = await socketPair(t);
  const open = encodeMessage(PacketType.TunnelOpenAck, { ok: true, tunnel_id: 't1' });
  const raw = Buffer.concat([Buffer.from([0x22, 0xff, 0xff, 0xff, 0xff]), randomBytes(5000)]); // not a valid frame
  // Byte by byte for the frame, then the raw bytes in one go: boundaries must not matter.
  for (const b of open) c.write(Buffer.from([b]));
  c.write(raw);
  const decoder = new FrameDecoder();
  const frame = await readFirstFrame(s, decoder, 5_000);
  t.equal(frame.type, PacketType.TunnelOpenAck);
  t.equal(s.listenerCount('data'), 0, 'no data listener left behind');
  t.ok(s.isPaused(), 'socket left paused');
  // Whatever was not yet read is still in the socket; the remainder plus the rest is exactly `raw`.
  const rest: Buffer[] = [decoder.takeRemainder()];
  s.on('data', (chunk: Buffer) => rest.push(chunk));
  s.resume();
  c.end();
  await new Promise((r) => s.once('end', r));
  t.ok(Buffer.concat(rest).equals(raw), 'exact raw remainder');
});

t.test('readFirstFrame rejects on a violation, an early close and a timeout', async (t) => {
  {
    const [c, s] = await socketPair(t);
    c.write(Buffer.from([0x23, 0, 0, 0, 0]));
    await t.rejects(readFirstFrame(s, new FrameDecoder(), 5_000), { code: 'TNX_WIRE_UNKNOWN_TYPE' });
  }
  {
    const [c, s] = await socketPair(t);
    c.write(Buffer.from([PacketType.Handshake, 0, 1, 0, 0]));
    await t.rejects(readFirstFrame(s, new FrameDecoder(1024), 5_000), { code: 'TNX_WIRE_FRAME_TOO_LARGE' });
  }
  {
    const [c, s] = await socketPair(t);
    c.end(encodeFrame(PacketType.Handshake, Buffer.from('{"pro')).subarray(0, 8));
    await t.rejects(readFirstFrame(s, new FrameDecoder(), 5_000), { code: 'TNX_WIRE_CLOSED' });
  }
  {
    const [, s] = await socketPair(t);
    await t.rejects(readFirstFrame(s, new FrameDecoder(), 50), { code: 'TNX_WIRE_TIMEOUT' });
  }
});

t.test('ByteBudget: leases share one capacity; readFirstFrame charges every chunk to its lease', async (t) => {
  const budget = new ByteBudget(100);
  const l1 = budget.lease();
  const l2 = budget.lease();
  t.ok(l1.take(60));
  t.notOk(l2.take(41), 'over the shared capacity: refused, nothing taken');
  t.ok(l2.take(40));
  t.equal(budget.inUse, 100);
  l1.release();
  l1.release();
  t.equal(budget.inUse, 40, 'release is idempotent');
  t.notOk(l1.take(1), 'a released lease takes nothing more');
  l2.release();
  t.equal(budget.inUse, 0);

  const free = budget.lease(10);
  t.ok(free.take(4) && free.take(4), 'within the free allowance');
  t.equal(budget.inUse, 0);
  t.ok(free.take(5));
  t.equal(budget.inUse, 3, 'only the part beyond the free allowance is charged');
  t.ok(budget.lease().take(97));
  t.notOk(free.take(1), 'the shared budget is full');
  t.ok(budget.lease(500).take(400), 'a small first read on a new connection still gets through');
  free.release();
  t.equal(budget.inUse, 97);

  const small = new ByteBudget(1000);
  const hog = small.lease();
  t.ok(hog.take(990));
  const [c, s] = await socketPair(t);
  const lease = small.lease();
  c.write(encodeFrame(PacketType.Handshake, Buffer.alloc(20)).subarray(0, 11));
  await t.rejects(readFirstFrame(s, new FrameDecoder(), 5_000, lease), { code: 'TNX_WIRE_BUSY' });
  t.equal(small.inUse, 990, 'the refused chunk was never charged');

  hog.release();
  const [c2, s2] = await socketPair(t);
  const lease2 = small.lease();
  c2.write(encodeFrame(PacketType.Handshake, Buffer.from('{}')));
  t.equal((await readFirstFrame(s2, new FrameDecoder(), 5_000, lease2)).type, PacketType.Handshake);
  t.equal(small.inUse, 7, 'what was read stays charged until the caller releases');
  lease2.release();
  t.equal(small.inUse, 0);
});

t.test('closeAfterFlush delivers what was queued, then closes', async (t) => {
  const [c, s] = await socketPair(t);
  const msg = randomBytes(100_000);
  const got: Buffer[] = [];
  c.on('data', (b: Buffer) => got.push(b));
  s.write(msg);
  closeAfterFlush(s, 1_000);
  await new Promise((r) => c.once('end', r));
  t.ok(Buffer.concat(got).equals(msg));
  c.end();
  await new Promise((r) => s.once('close', r));
});

t.test('ControlChannel: frames already buffered are delivered; heartbeats are internal; violations close', async (t) => {
  const [c, s] = await socketPair(t);
  const decoder = new FrameDecoder();
  const first = encodeMessage(PacketType.Handshake, { protocol_version: 1, client_version: 'x' });
  const next = encodeMessage(PacketType.CommandResp, { id: 'c1', ok: true });
  c.write(Buffer.concat([first, next, encodeMessage(PacketType.Heartbeat, { ts: 1 })]));
  await readFirstFrame(s, decoder, 5_000);
  const seen: unknown[] = [];
  let closedWith: string | undefined;
  const channel = new ControlChannel({
    socket: s,
    decoder,
    accept: new Set([PacketType.Heartbeat, PacketType.CommandResp]),
    heartbeatIntervalMs: 60_000,
    onMessage: (m) => seen.push(m),
    onClose: (reason) => (closedWith = reason),
  });
  channel.start();
  await new Promise((r) => setImmediate(r));
  t.same(seen, [{ type: PacketType.CommandResp, body: { id: 'c1', ok: true } }], 'the frame that arrived with the handshake is not lost');
  c.write(encodeMessage(PacketType.Command, { id: 'x', name: 'session.close', payload: { reason: 'r' } }));
  await new Promise((r) => s.once('close', r));
  t.match(closedWith, /protocol violation: unexpected Command/);
  t.ok(channel.closed);
  t.notOk(channel.send(PacketType.Heartbeat, { ts: 1 }), 'nothing is sent after close');
});

t.test('ControlChannel: a silent peer is closed after the silence timeout', async (t) => {
  const [c, s] = await socketPair(t);
  let heartbeats = 0;
  c.on('data', () => heartbeats++);
  const closed = new Promise<string>((resolve) => {
    new ControlChannel({
      socket: s,
      decoder: new FrameDecoder(),
      accept: new Set([PacketType.Heartbeat]),
      heartbeatIntervalMs: 20,
      onMessage: () => undefined,
      onClose: resolve,
    }).start();
  });
  t.match(await closed, /heartbeat timeout/);
  t.ok(heartbeats >= 1, 'heartbeats were sent meanwhile');
});

t.test('ControlChannel: the heartbeat deadline is measured from the last byte, not polled per interval', async (t) => {
  const [c, s] = await socketPair(t);
  const deadlineMs = 300;
  let closedAt = 0;
  let reason = '';
  const channel = new ControlChannel({
    socket: s,
    decoder: new FrameDecoder(),
    accept: new Set([PacketType.Heartbeat]),
    // Far longer than the deadline: a polled check would only notice after an interval.
    heartbeatIntervalMs: 60_000,
    silenceTimeoutMs: deadlineMs,
    onMessage: () => undefined,
    onClose: (r) => {
      closedAt = Date.now();
      reason = r;
    },
  });
  const started = Date.now();
  channel.start();
  // A peer that keeps talking (one heartbeat every 100 ms) stays, for several deadlines.
  let lastByte = 0;
  for (let i = 0; i < 10; i++) {
    c.write(encodeMessage(PacketType.Heartbeat, { ts: Date.now() }));
    lastByte = Date.now();
    await new Promise((r) => setTimeout(r, 100));
  }
  t.notOk(channel.closed, 'a peer that sends bytes within every deadline is kept');
  t.ok(Date.now() - started >= 3 * deadlineMs);
  await new Promise((r) => s.once('close', r));
  t.ok(channel.timedOut, 'closed for missing the deadline');
  t.match(reason, /heartbeat timeout, deadline 300 ms/);
  const quiet = closedAt - lastByte;
  t.ok(quiet >= deadlineMs - 20, `closed after ${quiet} ms of silence, not before the deadline`);
  // Generous: a loaded machine delays timers, but an interval-polled check would take 60 s.
  t.ok(quiet < deadlineMs + 2_000, `closed ${quiet} ms after the last byte`);
  t.ok(s.destroyed, 'the socket is freed at once, not after a FIN grace');
});

t.test('ControlChannel: a channel closed by its peer is not a timeout', async (t) => {
  const [c, s] = await socketPair(t);
  const channel = new ControlChannel({
    socket: s,
    decoder: new FrameDecoder(),
    accept: new Set([PacketType.Heartbeat]),
    heartbeatIntervalMs: 50,
    silenceTimeoutMs: 10_000,
    onMessage: () => undefined,
    onClose: () => undefined,
  });
  channel.start();
  c.end();
  await new Promise((r) => s.once('close', r));
  t.ok(channel.closed);
  t.notOk(channel.timedOut);
});
