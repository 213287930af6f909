import t from 'tap';
import { FrameDecoder, encodeFrame, encodeJsonFrame } from './codec.js';
import { decodeMessage, encodeMessage, type ControlMessage } from './messages.js';
import { PROTOCOL_VERSION, PacketType } from './packets.js';

const SAMPLES: ControlMessage[] = [
  { type: PacketType.Handshake, body: { protocol_version: 1, client_version: '0.1.0' } },
  { type: PacketType.Handshake, body: { protocol_version: 1, client_id: 600000001, auth_code: 'tnxc_x', client_version: '0.1.0' } },
  {
    type: PacketType.HandshakeResp,
    body: {
      ok: true,
      protocol_version: 1,
      client_id: 200000123,
      client_type: 'anonymous',
      auth_code: 'tnxc_abc',
      node_id: 'node-001',
      session_id: 's1',
      server_time_ms: 1700000000000,
      heartbeat_interval_ms: 30000,
    },
  },
  { type: PacketType.Handshake, body: { protocol_version: 1, client_id: 600000001, session_token: 'a.b.c', client_version: '0.1.0', features: ['session_token'] } },
  { type: PacketType.Handshake, body: { protocol_version: 1, client_version: '0.1.0', features: ['edge_end'] } },
  {
    type: PacketType.HandshakeResp,
    body: {
      ok: true,
      protocol_version: 1,
      client_id: 600000001,
      client_type: 'managed',
      node_id: 'node-001',
      session_id: 's2',
      server_time_ms: 1700000000000,
      heartbeat_interval_ms: 30000,
      session_token: 'a.b.c',
      features: ['edge_end'],
      tunnel_key: 'a5'.repeat(32),
    },
  },
  { type: PacketType.HandshakeResp, body: { ok: false, error: { code: 'TNX_AUTH_FAILED', message: 'no' } } },
  { type: PacketType.Heartbeat, body: { ts: 12 } },
  {
    type: PacketType.Command,
    body: {
      id: 'c1',
      name: 'config.sync',
      payload: {
        version: 7,
        mappings: [
          { mapping_id: 1001, protocol: 'tcp', role: 'source', local_host: '127.0.0.1', local_port: 13306, secret_key: 'k'.repeat(32) },
          { mapping_id: 1002, protocol: 'tcp', role: 'target', target_host: '10.0.0.5', target_port: 3306, secret_key: 'k'.repeat(32) },
        ],
      },
    },
  },
  { type: PacketType.Command, body: { id: 'c2', name: 'tunnel.open', payload: { tunnel_id: 't1', mapping_id: 1001, target_host: 'h', target_port: 22 } } },
  { type: PacketType.Command, body: { id: 'c5', name: 'tunnel.open', payload: { tunnel_id: 't2', mapping_id: 1001, target_host: 'h', target_port: 22, ticket: 'c'.repeat(32) } } },
  { type: PacketType.Command, body: { id: 'c3', name: 'session.close', payload: { reason: 'replaced' } } },
  { type: PacketType.Command, body: { id: 'c4', name: 'session.token', payload: { token: 'a.b.c' } } },
  { type: PacketType.CommandResp, body: { id: 'c2', ok: false, error: { code: 'TNX_AGENT_DIAL_FAILED', message: 'ECONNREFUSED' } } },
  { type: PacketType.TunnelEnd, body: { tunnel_id: 'ab12', role: 'target' } },
  {
    type: PacketType.CommandResp,
    body: {
      id: 'c1',
      ok: false,
      error: { code: 'TNX_AGENT_LISTEN_FAILED', message: 'mapping 1001: listen 127.0.0.1:13306: EADDRINUSE' },
      applied: {
        version: 7,
        mappings: [
          { mapping_id: 1001, role: 'source', ok: false, error: 'listen 127.0.0.1:13306: EADDRINUSE' },
          { mapping_id: 1002, role: 'target', ok: true },
        ],
      },
    },
  },
  {
    type: PacketType.TunnelOpen,
    body: {
      protocol_version: PROTOCOL_VERSION,
      mapping_id: 1001,
      tunnel_id: 'ab12',
      role: 'source',
      client_id: 600000001,
      ts: 1700000000000,
      nonce: '0'.repeat(32),
      proof: 'f'.repeat(64),
    },
  },
  {
    type: PacketType.TunnelOpen,
    body: {
      protocol_version: PROTOCOL_VERSION,
      mapping_id: 1001,
      tunnel_id: 'ab12',
      role: 'target',
      client_id: 600000002,
      ts: 1700000000000,
      nonce: '0'.repeat(32),
      proof: 'f'.repeat(64),
      session_id: '3f1f6a9e-0c0e-4b8e-9a57-2d7d1b1f0e11',
      ticket: 'c'.repeat(32),
    },
  },
  { type: PacketType.TunnelOpenAck, body: { ok: true, tunnel_id: 'ab12' } },
  { type: PacketType.TunnelOpenAck, body: { ok: false, tunnel_id: 'ab12', error: { code: 'TNX_TUNNEL_REFUSED', message: 'refused' } } },
];

t.test('every message kind survives encode → decoder → decodeMessage', async (t) => {
  const wire = Buffer.concat(SAMPLES.map((m) => encodeMessage(m.type, m.body as never)));
  const d = new FrameDecoder();
  const got = d.push(wire).map(decodeMessage);
  t.same(got, SAMPLES);
});

t.test('bad JSON is a FrameError', async (t) => {
  t.throws(() => decodeMessage({ type: PacketType.Heartbeat, payload: Buffer.from('{"ts":') }), {
    name: 'FrameError',
    code: 'TNX_WIRE_BAD_JSON',
  });
  t.throws(() => decodeMessage({ type: PacketType.Heartbeat, payload: Buffer.alloc(0) }), { code: 'TNX_WIRE_BAD_JSON' });
  t.throws(() => decodeMessage({ type: PacketType.Heartbeat, payload: Buffer.from([0xff, 0xfe]) }), { code: 'TNX_WIRE_BAD_JSON' });
});

t.test('schema violations are FrameErrors naming the field', async (t) => {
  const bad: [number, unknown, RegExp][] = [
    [PacketType.Heartbeat, { ts: 'now' }, /ts/],
    [PacketType.Heartbeat, null, /root/],
    [PacketType.Handshake, { protocol_version: 1, client_version: 'x', extra: 1 }, /Handshake/],
    [PacketType.Handshake, { protocol_version: 0, client_version: 'x' }, /protocol_version/],
    [PacketType.Handshake, { protocol_version: 1, client_version: 'x', client_id: 1, session_token: 't'.repeat(2049) }, /session_token/],
    [PacketType.Handshake, { protocol_version: 1, client_version: 'x', client_id: 1, session_token: '' }, /session_token/],
    [PacketType.Command, { id: 'c', name: 'session.token', payload: { token: 't', extra: 1 } }, /payload/],
    [PacketType.Command, { id: 'c', name: 'rm -rf', payload: {} }, /Command/],
    [PacketType.Command, { id: 'c', name: 'tunnel.open', payload: { tunnel_id: 't', mapping_id: 1, target_host: 'h', target_port: 70000 } }, /target_port/],
    [PacketType.TunnelOpen, { protocol_version: 1, mapping_id: 1, tunnel_id: 't', role: 'source', client_id: 1, ts: 1, nonce: 'xyz', proof: 'f'.repeat(64) }, /nonce/],
    [PacketType.TunnelOpen, { protocol_version: 1, mapping_id: 1, tunnel_id: 't', role: 'admin', client_id: 1, ts: 1, nonce: '0'.repeat(32), proof: 'f'.repeat(64) }, /role/],
    [PacketType.TunnelOpen, { protocol_version: 1, mapping_id: 1, tunnel_id: 't', role: 'source', client_id: 1, ts: 1, nonce: '0'.repeat(32), proof: 'f'.repeat(64), session_id: 'a|b' }, /session_id/],
    [PacketType.TunnelOpen, { protocol_version: 1, mapping_id: 1, tunnel_id: 't', role: 'target', client_id: 1, ts: 1, nonce: '0'.repeat(32), proof: 'f'.repeat(64), ticket: 'C'.repeat(32) }, /ticket/],
    [PacketType.Command, { id: 'c', name: 'tunnel.open', payload: { tunnel_id: 't', mapping_id: 1, target_host: 'h', target_port: 22, ticket: 'short' } }, /ticket/],
    [PacketType.HandshakeResp, { ok: true, protocol_version: 1, client_id: 1, client_type: 'managed', node_id: 'n', session_id: 's', server_time_ms: 1, heartbeat_interval_ms: 1, tunnel_key: 'k' }, /tunnel_key/],
    [PacketType.TunnelOpenAck, { ok: 'yes', tunnel_id: 't' }, /TunnelOpenAck/],
  ];
  for (const [type, body, message] of bad) {
    t.throws(() => decodeMessage({ type, payload: Buffer.from(JSON.stringify(body)) }), { name: 'FrameError', code: 'TNX_WIRE_BAD_MESSAGE', message });
  }
});

t.test('a frame type with no message schema is refused', async (t) => {
  for (const type of [PacketType.TunnelData, PacketType.TunnelClose, 0x7f]) {
    t.throws(() => decodeMessage({ type, payload: Buffer.from('{}') }), { name: 'FrameError', code: 'TNX_WIRE_UNKNOWN_TYPE' });
  }
});

t.test('encodeMessage produces the same bytes as a hand-built frame', async (t) => {
  const body = { ts: 42 };
  t.ok(encodeMessage(PacketType.Heartbeat, body).equals(encodeFrame(0x03, Buffer.from('{"ts":42}'))));
  t.ok(encodeMessage(PacketType.Heartbeat, body).equals(encodeJsonFrame(PacketType.Heartbeat, body)));
});
