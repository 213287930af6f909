import t from 'tap';
import { fork } from 'node:child_process';
import { connect as h2connect } from 'node:http2';
import { fileURLToPath } from 'node:url';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { BridgeError, BridgeErrorCode, BridgeServer, DEFAULT_FLOW_CONTROL_WINDOW } from '../../services/edge/bridge/index.js';
import { collect, echoHandler, eventually, fate, newPool, openReq, SECRET, sha, startBridge, startEcho, writeAll } from './helpers.js';

const holdHandler = (held: Duplex[]) => (_open: unknown, s: Duplex) => {
  s.on('error', () => undefined);
  held.push(s);
};

t.test('max streams per connection opens another connection; max connections refuses with POOL_EXHAUSTED', async (t) => {
  const held: Duplex[] = [];
  const server = await startBridge(t, { handler: holdHandler(held) });
  const address = `127.0.0.1:${server.port}`;
  const pool = newPool(t, { minConnections: 1, maxConnections: 2, maxStreamsPerConnection: 2 });
  const mine: Duplex[] = [];
  for (let i = 0; i < 2; i++) mine.push(await pool.open(address, openReq()));
  t.same(pool.stats(address).map((c) => c.streams), [2], 'two streams packed on one connection');
  t.equal(server.stats().connections, 1, 'the callee sees one HTTP/2 connection');
  mine.push(await pool.open(address, openReq()));
  t.same(pool.stats(address).map((c) => c.streams), [2, 1], 'the third stream opened a second connection');
  t.equal(server.stats().connections, 2, 'the callee sees two connections');
  mine.push(await pool.open(address, openReq()));
  t.same(pool.stats(address).map((c) => c.streams), [2, 2]);
  const err = await pool.open(address, openReq()).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof BridgeError && err.code === BridgeErrorCode.PoolExhausted, 'the fifth stream is refused at once');
  t.equal(held.length, 4, 'the callee never saw the refused one');
  t.equal(server.stats().connections, 2, 'and no third connection was dialled');

  // A freed slot is reused before anything new is dialled.
  mine[0]!.destroy();
  await eventually(() => pool.stats(address)[0]?.streams === 1, 'the slot to be released');
  mine.push(await pool.open(address, openReq()));
  t.same(pool.stats(address).map((c) => c.streams), [2, 2]);
  t.equal(server.stats().connections, 2);
  for (const s of mine) s.destroy();
});

t.test('idle reaping closes connections above min, never below', async (t) => {
  const held: Duplex[] = [];
  const server = await startBridge(t, { handler: holdHandler(held) });
  const address = `127.0.0.1:${server.port}`;
  const pool = newPool(t, { minConnections: 1, maxConnections: 3, maxStreamsPerConnection: 1, idleTimeoutMs: 100 });
  const mine = [await pool.open(address, openReq()), await pool.open(address, openReq()), await pool.open(address, openReq())];
  t.equal(pool.stats(address).length, 3);
  t.equal(server.stats().connections, 3);
  for (const s of mine) s.destroy();
  await eventually(() => pool.stats(address).length === 1, 'the pool to reap down to min');
  await eventually(() => server.stats().connections === 1, 'the callee to see the reaped connections close');
  await new Promise((r) => setTimeout(r, 300)); // several more reaper rounds (not a timed assertion)
  t.equal(pool.stats(address).length, 1, 'min connections stay, idle or not');
  const again = await pool.open(address, openReq());
  t.equal(server.stats().connections, 1, 'the kept connection is reused');
  again.destroy();
});

t.test('an unreachable peer: open rejects with TNX_BRIDGE_UNAVAILABLE and leaves no connection behind', async (t) => {
  const gone = await startBridge(t, { handler: () => undefined });
  const address = `127.0.0.1:${gone.port}`;
  await gone.close(0);
  const pool = newPool(t);
  const err = await pool.open(address, openReq()).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof BridgeError && err.code === BridgeErrorCode.Unavailable, `refused connect -> ${(err as Error).message}`);
  await eventually(() => pool.stats(address).length === 0, 'the failed connection to leave the pool');
});

t.test('a killed peer: its streams reset, the pool drops the connection, a restarted peer works', async (t) => {
  const echoPort = await startEcho(t);
  const first = await startBridge(t, { handler: echoHandler(echoPort) });
  const port = first.port;
  const address = `127.0.0.1:${port}`;
  const pool = newPool(t);
  const s = await pool.open(address, openReq());
  const f = fate(s);
  s.write(randomBytes(1000));
  await first.close(0); // like kill -9: connections just go
  const r = await f;
  t.equal(r.how, 'error', 'the open stream sees a reset, not an end');
  await eventually(() => pool.stats(address).length === 0, 'the dead connection to leave the pool');

  const restarted = new BridgeServer({ nodeId: 'node-b', secret: SECRET, host: '127.0.0.1', port, handler: echoHandler(echoPort) });
  await restarted.start();
  t.teardown(() => restarted.close());
  const s2 = await pool.open(address, openReq());
  const data = randomBytes(300_000);
  const got = collect(s2);
  await writeAll(s2, data);
  t.equal(sha(await got), sha(data), 'a new open to the restarted peer carries bytes');
  t.equal(pool.stats(address).length, 1, 'over one fresh connection');
});

t.test('keepalive: a frozen peer (no FIN, no RST) is detected, dropped, and its stream reset', async (t) => {
  const child = fork(fileURLToPath(new URL('./peer-process.js', import.meta.url)), [SECRET], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  t.teardown(() => {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  });
  const port = await new Promise<number>((r) => child.once('message', (m) => r(Number(m))));
  const address = `127.0.0.1:${port}`;
  const pool = newPool(t, { keepaliveTimeMs: 300, keepaliveTimeoutMs: 300, openTimeoutMs: 1000 });
  const s = await pool.open(address, openReq());
  const echoed = new Promise((r) => s.once('data', r));
  s.write(Buffer.from('ping'));
  await echoed;
  const f = fate(s);
  child.kill('SIGSTOP');
  const r = await f;
  t.equal(r.how, 'error', 'the stream sees a reset once the ping goes unanswered');
  await eventually(() => pool.stats(address).length === 0, 'the dead connection to leave the pool');
  const err = await pool.open(address, { ...openReq() }).then(
    (x) => (x.destroy(), undefined),
    (e: unknown) => e,
  );
  t.ok(err instanceof BridgeError && (err.code === BridgeErrorCode.Timeout || err.code === BridgeErrorCode.Unavailable), 'an open to the still-frozen peer fails (timeout or unavailable) instead of hanging');
});

t.test('HTTP/2 windows: the callee advertises the raised stream window and grants the connection window', async (t) => {
  const server = await startBridge(t, { handler: () => undefined });
  const session = h2connect(`http://127.0.0.1:${server.port}`);
  t.teardown(() => session.destroy());
  await eventually(() => session.remoteSettings.initialWindowSize === DEFAULT_FLOW_CONTROL_WINDOW, 'the raised SETTINGS_INITIAL_WINDOW_SIZE');
  await eventually(() => (session.state.remoteWindowSize ?? 0) >= DEFAULT_FLOW_CONTROL_WINDOW, 'the connection window update');
  t.pass(`initial window ${session.remoteSettings.initialWindowSize}, connection window ${session.state.remoteWindowSize}`);

  const plain = await startBridge(t, { handler: () => undefined, flowControlWindow: 0 });
  const s2 = h2connect(`http://127.0.0.1:${plain.port}`);
  t.teardown(() => s2.destroy());
  await eventually(() => s2.remoteSettings !== undefined && s2.state.remoteWindowSize !== undefined && (s2.remoteSettings.initialWindowSize ?? 0) > 0, 'settings');
  t.equal(s2.remoteSettings.initialWindowSize, 65_535, 'without the raise grpc-js leaves Node\'s 64 KiB (the baseline the bench compares)');
});

t.test('a draining peer (GOAWAY): the pool stops using the connection, running streams still finish byte-exact', async (t) => {
  const server = await startBridge(t, { handler: echoHandler(await startEcho(t)) });
  const address = `127.0.0.1:${server.port}`;
  const pool = newPool(t);
  const s = await pool.open(address, openReq());
  const closed = server.close(10_000); // graceful: GOAWAY, running calls may finish
  await eventually(() => pool.stats(address).length === 0, 'the draining connection to leave the pool');
  const data = randomBytes(2 * 1024 * 1024);
  const got = collect(s);
  await writeAll(s, data);
  t.equal(sha(await got), sha(data), 'the running stream completed on the old connection');
  await closed;
});

t.test('forget(peer) resets its open streams on both sides', async (t) => {
  const held: Duplex[] = [];
  const server = await startBridge(t, { handler: holdHandler(held) });
  const address = `127.0.0.1:${server.port}`;
  const pool = newPool(t);
  const s = await pool.open(address, openReq());
  const mine = fate(s);
  const theirs = fate(held[0]!);
  pool.forget(address);
  const m = await mine;
  t.ok(m.how === 'error' && m.err.code === BridgeErrorCode.Closed, 'the caller stream errors with TNX_BRIDGE_CLOSED');
  t.equal((await theirs).how, 'error', 'the callee stream sees a reset');
  t.same(pool.stats(address), []);
});

t.test('open timeout: the caller gives up, and the callee stream it had begun is reset', async (t) => {
  let callee: Duplex | undefined;
  const server = await startBridge(t, {
    handler: (_open, s) => {
      callee = s;
      return new Promise(() => undefined); // the target agent never answers
    },
  });
  const pool = newPool(t, { openTimeoutMs: 200 });
  const err = await pool.open(`127.0.0.1:${server.port}`, openReq()).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof BridgeError && err.code === BridgeErrorCode.Timeout, 'TNX_BRIDGE_TIMEOUT');
  await eventually(() => callee?.destroyed, 'the callee stream to be reset');
  t.equal(server.stats().streams, 0);
});
