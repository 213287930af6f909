import t from 'tap';
import {
  DEFAULT_MAX_FRAME_SIZE,
  FRAME_HEADER_SIZE,
  PROTOCOL_VERSION,
  PacketType,
  WIRE_PACKET_TYPES,
  packetTypeName,
} from './packets.js';

// frp habit: the wire ids are pinned so a refactor can never silently renumber them.
t.test('packet type ids are pinned', async (t) => {
  t.same(PacketType, {
    Handshake: 0x01,
    HandshakeResp: 0x02,
    Heartbeat: 0x03,
    Command: 0x10,
    CommandResp: 0x11,
    TunnelEnd: 0x12,
    TunnelOpen: 0x20,
    TunnelOpenAck: 0x21,
    TunnelData: 0x22,
    TunnelClose: 0x23,
  });
  t.equal(Object.keys(PacketType).length, 10);
});

t.test('only control and tunnel-open types are valid on the wire; 0x22/0x23 are reserved', async (t) => {
  t.same([...WIRE_PACKET_TYPES].sort((a, b) => a - b), [0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x20, 0x21]);
  t.notOk(WIRE_PACKET_TYPES.has(PacketType.TunnelData));
  t.notOk(WIRE_PACKET_TYPES.has(PacketType.TunnelClose));
});

t.test('framing constants', async (t) => {
  t.equal(FRAME_HEADER_SIZE, 5);
  t.equal(PROTOCOL_VERSION, 1);
  t.equal(DEFAULT_MAX_FRAME_SIZE, 1024 * 1024);
});

t.test('packetTypeName', async (t) => {
  t.equal(packetTypeName(0x20), 'TunnelOpen');
  t.equal(packetTypeName(0x22), 'TunnelData');
  t.equal(packetTypeName(0x7f), '0x7f');
  t.equal(packetTypeName(0x00), '0x00');
});
