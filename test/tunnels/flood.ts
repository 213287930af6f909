/**
 * A child process for the pre-authentication memory test (not a test itself): opens `count`
 * loopback connections to the edge, each announcing a Handshake of `announce` bytes and sending
 * `send` bytes of it, and holds them. Run apart from the edge so the edge's RSS is measured alone.
 *
 *   node flood.js <port> <count> <announce> <send>
 *
 * Prints one JSON line when every connection has been made and written: {"opened": n, "closed": k}
 * (k = connections the edge has already closed). Each "status" line on stdin prints the counts
 * again; stdin closing ends the process.
 */
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { PacketType } from '../../shared/wire/packets.js';

const [port, count, announce, send] = process.argv.slice(2).map(Number) as [number, number, number, number];
const header = Buffer.alloc(5);
header.writeUInt8(PacketType.Handshake, 0);
header.writeUInt32BE(announce, 1);
const body = Buffer.alloc(send, 0x20);
let opened = 0;
let closed = 0;
const sockets: Socket[] = [];

function open(): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    sockets.push(s);
    s.on('error', () => undefined);
    s.once('close', () => {
      closed++;
      resolve();
    });
    s.once('connect', () => {
      opened++;
      s.write(header);
      s.write(body, () => resolve());
    });
  });
}

const report = (): void => void process.stdout.write(`${JSON.stringify({ opened, closed })}\n`);

// In batches, so the listen backlog never overflows (a dropped SYN is retried only after 1 s).
for (let i = 0; i < count; i += 100) await Promise.all(Array.from({ length: Math.min(100, count - i) }, open));
await new Promise((r) => setTimeout(r, 300));
report();
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'status') report();
});
rl.on('close', () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
});
