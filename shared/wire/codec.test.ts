import t from 'tap';
import { randomBytes } from 'node:crypto';
import { FrameDecoder, encodeFrame, encodeJsonFrame, type Frame } from './codec.js';
import { FRAME_HEADER_SIZE, PacketType } from './packets.js';

function header(type: number, length: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_SIZE);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(length, 1);
  return h;
}

function plain(frames: Frame[]): { type: number; payload: string }[] {
  return frames.map((f) => ({ type: f.type, payload: f.payload.toString('hex') }));
}

// Frames of awkward sizes: empty, shorter than a header, exactly a header, a large one.
const FRAMES: Frame[] = [
  { type: PacketType.Heartbeat, payload: Buffer.alloc(0) },
  { type: PacketType.Command, payload: Buffer.from('x') },
  { type: PacketType.CommandResp, payload: randomBytes(4) },
  { type: PacketType.Handshake, payload: randomBytes(5) },
  { type: PacketType.TunnelOpen, payload: randomBytes(6) },
  { type: PacketType.HandshakeResp, payload: randomBytes(300) },
  { type: PacketType.TunnelOpenAck, payload: randomBytes(2) },
];
const STREAM = Buffer.concat(FRAMES.map((f) => encodeFrame(f.type, f.payload)));

t.test('encodeFrame writes type, big-endian length, payload', async (t) => {
  const f = encodeFrame(0x10, Buffer.from([0xaa, 0xbb, 0xcc]));
  t.same([...f], [0x10, 0, 0, 0, 3, 0xaa, 0xbb, 0xcc]);
  t.same([...encodeFrame(0x03, Buffer.alloc(0))], [0x03, 0, 0, 0, 0]);
  const big = encodeFrame(0x02, Buffer.alloc(0x01020304 & 0xffff));
  t.equal(big.readUInt32BE(1), 0x0304);
  t.same([...encodeJsonFrame(0x03, { ts: 1 })], [0x03, 0, 0, 0, 8, ...Buffer.from('{"ts":1}')]);
});

t.test('roundtrip in one chunk', async (t) => {
  const d = new FrameDecoder();
  t.same(plain(d.push(STREAM)), plain(FRAMES));
  t.equal(d.bufferedBytes, 0);
});

t.test('a stream split at every possible boundary decodes identically', async (t) => {
  const want = plain(FRAMES);
  for (let i = 0; i <= STREAM.length; i++) {
    const d = new FrameDecoder();
    const got = [...d.push(STREAM.subarray(0, i)), ...d.push(STREAM.subarray(i))];
    if (JSON.stringify(plain(got)) !== JSON.stringify(want)) {
      t.fail(`split at ${i} decoded differently`);
      return;
    }
    t.equal(d.bufferedBytes, 0);
  }
  t.pass(`all ${STREAM.length + 1} splits decode identically`);
});

t.test('every three-way split of the small frames decodes identically', async (t) => {
  const smallFrames = FRAMES.slice(0, 5);
  const small = Buffer.concat(smallFrames.map((f) => encodeFrame(f.type, f.payload)));
  const want = JSON.stringify(plain(smallFrames));
  let cases = 0;
  for (let i = 0; i <= small.length; i++) {
    for (let j = i; j <= small.length; j++) {
      const d = new FrameDecoder();
      const got = [...d.push(small.subarray(0, i)), ...d.push(small.subarray(i, j)), ...d.push(small.subarray(j))];
      cases++;
      if (JSON.stringify(plain(got)) !== want) {
        t.fail(`split at ${i},${j} decoded differently`);
        return;
      }
    }
  }
  t.pass(`${cases} three-way splits decode identically`);
});

t.test('one byte at a time', async (t) => {
  const d = new FrameDecoder();
  const got: Frame[] = [];
  for (let i = 0; i < STREAM.length; i++) got.push(...d.push(STREAM.subarray(i, i + 1)));
  t.same(plain(got), plain(FRAMES));
  t.equal(d.bufferedBytes, 0);
});

t.test('one byte at a time, a maximum-size frame', async (t) => {
  const max = 64 * 1024;
  const payload = randomBytes(max);
  const wire = encodeFrame(PacketType.Command, payload);
  const d = new FrameDecoder(max);
  const got: Frame[] = [];
  for (let i = 0; i < wire.length; i++) got.push(...d.push(wire.subarray(i, i + 1)));
  t.equal(got.length, 1);
  t.ok(got[0]!.payload.equals(payload));
});

t.test('oversized length is refused from the 5-byte header alone', async (t) => {
  const d = new FrameDecoder(1024);
  t.same(d.push(header(PacketType.Command, 1024)), [], 'exactly the cap is fine');
  t.equal(d.bufferedBytes, FRAME_HEADER_SIZE);

  const d2 = new FrameDecoder(1024);
  t.throws(() => d2.push(header(PacketType.Command, 1025)), { name: 'FrameError', code: 'TNX_WIRE_FRAME_TOO_LARGE' });
  t.equal(d2.bufferedBytes, FRAME_HEADER_SIZE, 'nothing but the header was ever held');

  const d3 = new FrameDecoder();
  t.throws(() => d3.push(header(PacketType.Handshake, 0xffffffff)), { name: 'FrameError', code: 'TNX_WIRE_FRAME_TOO_LARGE' });

  // The header split across pushes is still refused as soon as its last byte arrives.
  const d4 = new FrameDecoder(1024);
  const h = header(PacketType.Command, 1_000_000);
  for (let i = 0; i < 4; i++) t.same(d4.push(h.subarray(i, i + 1)), []);
  t.throws(() => d4.push(h.subarray(4)), { name: 'FrameError', code: 'TNX_WIRE_FRAME_TOO_LARGE' });
});

t.test('a small first-frame cap, raised after it: later frames are checked against the new cap', async (t) => {
  const d = new FrameDecoder(64);
  const first = encodeFrame(PacketType.Handshake, Buffer.alloc(60));
  const big = encodeFrame(PacketType.CommandResp, Buffer.alloc(1000));
  // Both arrive in one chunk; only the first is examined under the small cap.
  t.equal(d.push(Buffer.concat([first, big]), 1).length, 1);
  d.setMaxFrameSize(4096);
  t.same(d.push(Buffer.alloc(0)).map((f) => f.payload.length), [1000], 'the larger frame is accepted once the cap is raised');
  t.throws(() => new FrameDecoder(64).push(big), { code: 'TNX_WIRE_FRAME_TOO_LARGE' }, 'but not before');
});

t.test('an oversized frame after valid ones fails only when reached', async (t) => {
  const d = new FrameDecoder(16);
  const ok = encodeFrame(PacketType.Heartbeat, Buffer.from('{}'));
  t.equal(d.push(ok).length, 1);
  t.throws(() => d.push(header(PacketType.Command, 17)), { name: 'FrameError', code: 'TNX_WIRE_FRAME_TOO_LARGE' });
});

t.test('unknown and reserved types are refused from the header', async (t) => {
  for (const type of [0x00, 0x04, 0x13, 0x22, 0x23, 0x24, 0xff]) {
    const d = new FrameDecoder();
    t.throws(() => d.push(header(type, 0)), { name: 'FrameError', code: 'TNX_WIRE_UNKNOWN_TYPE' });
  }
});

t.test('a failed decoder refuses further input', async (t) => {
  const d = new FrameDecoder();
  t.throws(() => d.push(header(0x22, 1)), { name: 'FrameError', code: 'TNX_WIRE_UNKNOWN_TYPE' });
  t.throws(() => d.push(encodeFrame(PacketType.Heartbeat, Buffer.from('{}'))), { name: 'FrameError', code: 'TNX_WIRE_DECODER_FAILED' });
});

t.test('takeRemainder returns exactly the bytes after the last frame', async (t) => {
  const raw = randomBytes(777);
  const d = new FrameDecoder();
  const frames = d.push(Buffer.concat([STREAM, raw.subarray(0, 3)]));
  // 3 random bytes are fewer than a header, so the decoder cannot have examined them as one.
  t.equal(frames.length, FRAMES.length);
  t.ok(d.takeRemainder().equals(raw.subarray(0, 3)));
  t.equal(d.bufferedBytes, 0);
  t.equal(d.takeRemainder().length, 0, 'empty after a take');

  const partial = encodeFrame(PacketType.Command, randomBytes(40)).subarray(0, 17);
  const d2 = new FrameDecoder();
  t.equal(d2.push(Buffer.concat([encodeFrame(PacketType.Heartbeat, Buffer.alloc(0)), partial])).length, 1);
  t.ok(d2.takeRemainder().equals(partial), 'a partial frame, header included, is handed back');
});

t.test('maxFrames = 1 stops at the tunnel-open frame; raw bytes after it are never parsed', async (t) => {
  const open = encodeFrame(PacketType.TunnelOpen, randomBytes(90));
  // Raw tunnel bytes that would be a protocol violation if parsed as frames.
  const raw = Buffer.concat([Buffer.from([0x22, 0xff, 0xff, 0xff, 0xff]), randomBytes(500)]);
  const wire = Buffer.concat([open, raw]);
  for (let i = 0; i <= wire.length; i++) {
    const d = new FrameDecoder(128);
    const got = [...d.push(wire.subarray(0, i), 1)];
    if (got.length === 0) got.push(...d.push(wire.subarray(i), 1));
    else d.push(wire.subarray(i), 0);
    const rest = d.takeRemainder();
    if (got.length !== 1 || !got[0]!.payload.equals(open.subarray(FRAME_HEADER_SIZE)) || !rest.equals(raw)) {
      t.fail(`split at ${i}: wrong frame or remainder`);
      return;
    }
  }
  t.pass(`all ${wire.length + 1} splits hand back the exact raw remainder`);
});

t.test('maxFrames leaves later frames buffered for the next push', async (t) => {
  const d = new FrameDecoder();
  t.same(plain(d.push(STREAM, 2)), plain(FRAMES.slice(0, 2)));
  t.same(plain(d.push(Buffer.alloc(0), 3)), plain(FRAMES.slice(2, 5)));
  t.same(plain(d.push(Buffer.alloc(0))), plain(FRAMES.slice(5)));
});

