import t from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeSockets } from '../../shared/net/pipe.js';
import { BridgeErrorCode, MAX_FRAME_PAYLOAD, SEND_BUDGET, STREAM_HIGH_WATER_MARK, DEFAULT_FLOW_CONTROL_WINDOW, type BridgeOpen } from '../../services/edge/bridge/index.js';
import { collect, echoHandler, eventually, fate, MiB, newPool, openReq, sha, startBridge, startEcho, writeAll } from './helpers.js';

const addr = (port: number): string => `127.0.0.1:${port}`;

t.test('open + echo: several MiB cross the bridge byte-exact, the handler sees the verified Open', async (t) => {
  const calls: BridgeOpen[] = [];
  const server = await startBridge(t, { handler: echoHandler(await startEcho(t), calls) });
  const pool = newPool(t);
  const stream = await pool.open(addr(server.port), { targetNodeId: 'node-b', tunnelId: 'tun-echo', mappingId: 9, targetClientId: 1234 });
  const data = randomBytes(5 * MiB + 333);
  const got = collect(stream);
  await writeAll(stream, data);
  t.equal(sha(await got), sha(data), 'echoed byte-exact');
  t.same(calls, [{ sourceNodeId: 'node-a', targetNodeId: 'node-b', tunnelId: 'tun-echo', mappingId: 9, targetClientId: 1234 }]);
  await eventually(() => stream.closed && server.stats().streams === 0, 'both ends to close');
});

/** A handler that hands the callee's stream to the test. */
function capture(): { handler: (open: BridgeOpen, s: Duplex) => void; next: () => Promise<Duplex> } {
  const waiting: ((s: Duplex) => void)[] = [];
  const ready: Duplex[] = [];
  return {
    handler: (_open, s) => {
      const w = waiting.shift();
      if (w) w(s);
      else ready.push(s);
    },
    next: () => {
      const s = ready.shift();
      return s ? Promise.resolve(s) : new Promise((r) => waiting.push(r));
    },
  };
}

t.test('half-close: the caller ends first and still receives; the callee ends first and still receives', async (t) => {
  const cap = capture();
  const server = await startBridge(t, { handler: cap.handler });
  const pool = newPool(t);

  // Caller ends first.
  const a = await pool.open(addr(server.port), openReq());
  const aRemote = await cap.next();
  const request = randomBytes(300_000);
  const gotRemote = collect(aRemote);
  a.end(request);
  t.equal(sha(await gotRemote), sha(request), 'callee sees all bytes, then end');
  t.notOk(a.destroyed, 'caller stream stays open for the other direction');
  const answer = randomBytes(700_000);
  const gotA = collect(a);
  await writeAll(aRemote, answer);
  t.equal(sha(await gotA), sha(answer), 'caller receives after it ended its side');
  await eventually(() => a.closed && aRemote.closed, 'both ends to close');

  // Callee ends first.
  const b = await pool.open(addr(server.port), openReq());
  const bRemote = await cap.next();
  const banner = randomBytes(200_000);
  const gotB = collect(b);
  bRemote.end(banner);
  t.equal(sha(await gotB), sha(banner), 'caller sees the banner, then end');
  t.notOk(bRemote.destroyed, 'callee stream stays open');
  const upload = randomBytes(900_000);
  const gotBRemote = collect(bRemote);
  await writeAll(b, upload);
  t.equal(sha(await gotBRemote), sha(upload), 'callee receives after it ended its side');
  await eventually(() => b.closed && bRemote.closed, 'both ends to close');
});

t.test('reset: the callee destroys -> the caller sees an error, never an end; and the other way round', async (t) => {
  const cap = capture();
  const server = await startBridge(t, { handler: cap.handler });
  const pool = newPool(t);

  const a = await pool.open(addr(server.port), openReq());
  const aRemote = await cap.next();
  aRemote.write(randomBytes(1000));
  const aFate = fate(a);
  aRemote.destroy();
  const fa = await aFate;
  t.equal(fa.how, 'error', 'caller sees a reset');
  if (fa.how === 'error') t.equal(fa.err.code, BridgeErrorCode.Reset);

  const b = await pool.open(addr(server.port), openReq());
  const bRemote = await cap.next();
  b.write(randomBytes(1000));
  const bFate = fate(bRemote);
  b.destroy();
  const fb = await bFate;
  t.equal(fb.how, 'error', 'callee sees a reset');
  if (fb.how === 'error') t.equal(fb.err.code, BridgeErrorCode.Reset);

  // A half-closed stream that is then reset is still a reset, not an end.
  const c = await pool.open(addr(server.port), openReq());
  const cRemote = await cap.next();
  const cRemoteGot = collect(cRemote);
  c.end(Buffer.from('hello'));
  t.equal((await cRemoteGot).toString(), 'hello');
  const cFate = fate(c);
  cRemote.destroy();
  t.equal((await cFate).how, 'error', 'reset after half-close surfaces as an error');
  t.equal(server.stats().streams, 0);
});

t.test('reset crosses two pumps: a target killed mid-transfer resets the visitor, no silent truncation', async (t) => {
  // visitor TCP -> [pump] -> bridge -> [pump] -> target TCP, as the edges will wire it.
  let targetSocket: Socket | undefined;
  const targetServer = createServer({ allowHalfOpen: true }, (s) => {
    targetSocket = s;
    s.on('error', () => undefined);
    s.resume();
  });
  await new Promise<void>((r) => targetServer.listen(0, '127.0.0.1', r));
  t.teardown(() => targetServer.close());
  const server = await startBridge(t, { handler: echoHandler((targetServer.address() as AddressInfo).port) });
  const pool = newPool(t);
  const visitorServer = createServer({ allowHalfOpen: true }, (v) => {
    void pool.open(addr(server.port), openReq()).then((bridged) => pipeSockets(v, bridged));
  });
  await new Promise<void>((r) => visitorServer.listen(0, '127.0.0.1', r));
  t.teardown(() => visitorServer.close());
  const visitor = connect({ host: '127.0.0.1', port: (visitorServer.address() as AddressInfo).port, allowHalfOpen: true });
  const visitorFate = fate(visitor);
  visitor.write(randomBytes(256 * 1024));
  await eventually(() => targetSocket, 'the target to be dialled');
  targetSocket!.resetAndDestroy();
  const f = await visitorFate;
  t.equal(f.how, 'error', 'the visitor sees a reset');
  if (f.how === 'error') t.equal(f.err.code, 'ECONNRESET');
});

t.test('slow reader: a paused stream neither stalls its neighbour on the same connection nor buffers without bound', async (t) => {
  const sinks = new Map<string, Promise<Buffer>>();
  let producedForSlow = 0;
  let stopProducer = false;
  const server = await startBridge(t, {
    handler: (open, s) => {
      if (open.tunnelId === 'slow') {
        // Writes as fast as the bridge lets it: every byte accepted here is buffered somewhere,
        // since the caller never reads.
        const chunk = randomBytes(64 * 1024);
        const produce = (): void => {
          while (!stopProducer) {
            producedForSlow += chunk.length;
            if (!s.write(chunk)) {
              s.once('drain', produce);
              return;
            }
          }
        };
        queueMicrotask(produce);
        s.on('error', () => undefined);
      } else {
        sinks.set(open.tunnelId, collect(s).then((b) => (s.end(), b)));
      }
    },
  });
  const pool = newPool(t, { maxStreamsPerConnection: 10 });
  const slow = await pool.open(addr(server.port), openReq('slow'));
  slow.pause(); // never read
  const fast = await pool.open(addr(server.port), openReq('fast'));
  t.equal(pool.stats(addr(server.port)).length, 1, 'both streams share one pool connection');
  t.equal(server.stats().connections, 1, 'and one HTTP/2 connection at the callee');

  const data = randomBytes(32 * MiB);
  const fastEnded = collect(fast);
  await writeAll(fast, data);
  const got = await eventually(() => sinks.get('fast'), 'the fast sink');
  t.equal(sha(await got), sha(data), 'the fast stream transferred 32 MiB byte-exact while the other was paused');
  t.equal((await fastEnded).length, 0, 'and closed cleanly');

  // Bound: callee side, our writable high-water mark + SEND_BUDGET queued in the call; caller
  // side, the HTTP/2 stream window + the call's readable buffer (grpc-js: 16 messages) + our
  // readable high-water mark; plus one frame in flight.
  const bound = STREAM_HIGH_WATER_MARK + SEND_BUDGET + DEFAULT_FLOW_CONTROL_WINDOW + 16 * MAX_FRAME_PAYLOAD + STREAM_HIGH_WATER_MARK + MAX_FRAME_PAYLOAD;
  await eventually(() => producedForSlow > 0, 'the slow producer to start');
  const before = producedForSlow;
  await new Promise((r) => setTimeout(r, 300)); // let it run into its windows (not a timed assertion)
  t.ok(producedForSlow <= bound, `bytes produced for the unread stream (${producedForSlow}) stay within ${bound}`);
  t.ok(slow.readableLength <= STREAM_HIGH_WATER_MARK + MAX_FRAME_PAYLOAD, `the paused stream's own buffer (${slow.readableLength}) stays within its high-water mark`);
  t.ok(producedForSlow >= before, 'sanity');
  t.comment(`unread stream holds ${(producedForSlow / MiB).toFixed(2)} MiB in flight (bound ${(bound / MiB).toFixed(2)} MiB)`);

  // The paused stream still works once read: its bytes are all there, in order.
  stopProducer = true;
  let drained = 0;
  slow.on('data', (c: Buffer) => (drained += c.length));
  slow.resume(); // it was paused explicitly, so a 'data' listener alone does not start it
  await eventually(() => drained === producedForSlow || undefined, 'the paused stream to deliver what was produced');
  t.equal(drained, producedForSlow);
  slow.destroy();
});
