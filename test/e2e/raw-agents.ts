/**
 * Many lightweight agents in one process, for the half-open test (test/e2e/half-open.test.ts):
 * `node raw-agents.js HOST PORT COUNT`. Each is a real TCP control connection that completes the
 * handshake (an anonymous registration), acknowledges its config pushes and heartbeats, like
 * `tunnox client` minus the mappings. Prints `ready <count>` once every session is open, then runs
 * until it is killed.
 */
import { connect } from 'node:net';
import { FrameDecoder } from '../../shared/wire/codec.js';
import { AgentFeature } from '../../shared/wire/codes.js';
import { decodeMessage, encodeMessage } from '../../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../../shared/wire/packets.js';

const host = process.argv[2] ?? '';
const port = Number(process.argv[3]);
const count = Number(process.argv[4]);
if (!host || !Number.isInteger(port) || !Number.isInteger(count) || count < 1) {
  process.stderr.write('usage: raw-agents.js HOST PORT COUNT\n');
  process.exit(2);
}

function agent(): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    const decoder = new FrameDecoder();
    let ready = false;
    socket.on('error', (err) => (ready ? process.stderr.write(`agent connection error: ${err.message}\n`) : reject(err)));
    socket.on('close', () => {
      if (ready) process.stderr.write('an agent connection closed\n');
      else reject(new Error('closed before the handshake completed'));
    });
    socket.write(
      encodeMessage(PacketType.Handshake, {
        protocol_version: PROTOCOL_VERSION,
        client_version: 'raw-agents',
        features: [AgentFeature.TunnelKey, AgentFeature.HeartbeatTimeout],
      }),
    );
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        const msg = decodeMessage(frame);
        if (msg.type === PacketType.HandshakeResp) {
          if (!msg.body.ok) return reject(new Error(`handshake refused: ${msg.body.error.code} ${msg.body.error.message}`));
          ready = true;
          const beat = setInterval(() => socket.write(encodeMessage(PacketType.Heartbeat, { ts: Date.now() })), msg.body.heartbeat_interval_ms);
          socket.once('close', () => clearInterval(beat));
          resolve();
        } else if (msg.type === PacketType.Command && (msg.body.name === 'config.sync' || msg.body.name === 'config.delta')) {
          const version = msg.body.payload.version;
          socket.write(encodeMessage(PacketType.CommandResp, { id: msg.body.id, ok: true, applied: { version, mappings: [] } }));
        } else if (msg.type === PacketType.Command) {
          socket.write(encodeMessage(PacketType.CommandResp, { id: msg.body.id, ok: true }));
        }
      }
    });
  });
}

// A few at a time: each registration costs the edge an scrypt hash.
const BATCH = 10;
for (let i = 0; i < count; i += BATCH) {
  await Promise.all(Array.from({ length: Math.min(BATCH, count - i) }, () => agent()));
}
process.stdout.write(`ready ${count}\n`);
setInterval(() => undefined, 1 << 30);
