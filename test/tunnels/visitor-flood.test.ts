import t from 'tap';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { echoService, flood, tally, visitor } from './visitors.js';
import { DEFAULT_TUNNEL_LIMITS } from '../../services/edge/index.js';
import { createWorld, eventually, freePort, type World } from './world.js';

// Thousands of sockets on a machine shared with other suites: more than the default 180 s per file.
t.setTimeout(300_000);

/**
 * Issue 7: a flood of 3000 visitors on a public port, in-process with real sockets and a real
 * agent. Against an online agent the control session survives (the same session, heartbeats and
 * config pushes still answered) and every tunnel that succeeds is byte-exact; the tunnel requests
 * to the agent stay within the flow-control window throughout. Against an offline agent every
 * visitor is refused at once and the edge's memory stays bounded.
 */

const VISITORS = 3000;
/** Every visitor comes from 127.0.0.1: the per-IP rate limit (limits.test.ts) is off, so the flood reaches the tunnel broker. */
const NO_RATE = { perSecond: 0, burst: 1 };

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Memory after two full collections. */
async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
  return process.memoryUsage();
}

async function sessionFacts(w: World, clientId: number): Promise<{ connected: string[]; disconnected: number }> {
  const events = await w.store.readAll(0, 100_000);
  const mine = events.filter((e) => (e.data as { client_id?: number }).client_id === clientId);
  return {
    connected: mine.filter((e) => e.type === 'ClientConnected').map((e) => (e.data as { session_id: string }).session_id),
    disconnected: mine.filter((e) => e.type === 'ClientDisconnected').length,
  };
}

t.test(`${VISITORS} visitors against an online agent: the control session survives, successful tunnels are byte-exact`, async (t) => {
  // Heartbeats every second, silence for 5 s ends a session (either side): a control connection
  // starved by the flood would be cut within it.
  const w = await createWorld(t, { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 5_000, visitorRate: NO_RATE });
  const echo = await echoService(t);
  const user = await w.user();
  const b = await w.client(user);
  const port = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port });
  const agent = w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(async () => (await visitor(port, 2_000)).kind === 'exact', 'a first tunnel through the agent');
  const before = await sessionFacts(w, b.clientId);
  t.equal(before.connected.length, 1, 'one session before the flood');

  let maxInFlight = 0;
  let maxPending = 0;
  const sampler = setInterval(() => {
    const s = w.edge.stats();
    maxInFlight = Math.max(maxInFlight, s.inFlightOpens);
    maxPending = Math.max(maxPending, s.pendingTunnels);
  }, 5);
  const started = Date.now();
  const outcomes = await flood(port, VISITORS, 60_000);
  clearInterval(sampler);
  const c = tally(outcomes);
  t.comment(`${VISITORS} visitors in ${Date.now() - started} ms: ${JSON.stringify(c)}; max in flight ${maxInFlight}, max pending ${maxPending}`);
  t.equal(c.corrupt, 0, 'no tunnel carried wrong or truncated bytes');
  t.equal(c.timeout, 0, 'every visitor was answered or refused, none left hanging');
  t.ok(c.exact > 0, `${c.exact} tunnels succeeded byte-exact`);
  t.equal(c.exact + c.refused, VISITORS);
  t.ok(maxInFlight <= DEFAULT_TUNNEL_LIMITS.openWindowPerAgent, `tunnel requests in flight to the agent stayed within the window (${maxInFlight})`);
  t.ok(maxPending <= DEFAULT_TUNNEL_LIMITS.maxPendingOpensPerMapping, `pending visitors stayed within max_pending_opens (${maxPending})`);

  const after = await sessionFacts(w, b.clientId);
  t.same(after, before, 'the same control session: no new login, no disconnect');
  t.equal(w.edge.stats().sessions, 1);
  t.ok(agent.status().connected, 'the agent is still connected');
  // Heartbeats go on (a 5 s silence would close the session now).
  await new Promise((r) => setTimeout(r, 6_000));
  t.same(await sessionFacts(w, b.clientId), before, 'still the same session 6 s later (heartbeats answered)');
  // Config pushes still reach it, and new tunnels work.
  const port2 = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: echo, publicPort: port2 });
  await eventually(async () => (await visitor(port2, 2_000)).kind === 'exact', 'a tunnel through a mapping created after the flood');
  t.equal((await visitor(port, 5_000)).kind, 'exact', 'the flooded mapping works again');
  await eventually(() => w.edge.stats().tunnels === 0 && w.edge.stats().pendingTunnels === 0, 'every tunnel ended');
});

t.test(`${VISITORS} visitors against an offline agent: all refused at once, edge memory bounded`, async (t) => {
  const w = await createWorld(t, { visitorRate: NO_RATE });
  const user = await w.user();
  const b = await w.client(user); // never connects
  const port = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: 9, publicPort: port });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');
  // Warm-up so code and pools are in place before the baseline.
  await flood(port, 200, 10_000);
  const base = await settledMemory();
  const started = Date.now();
  const outcomes = await flood(port, VISITORS, 30_000);
  const ms = Date.now() - started;
  const c = tally(outcomes);
  const slowest = Math.max(...outcomes.map((o) => o.closedAfterMs));
  const grown = await settledMemory();
  const heapMiB = (grown.heapUsed - base.heapUsed) / 2 ** 20;
  const rssMiB = (grown.rss - base.rss) / 2 ** 20;
  t.comment(`${VISITORS} refused in ${ms} ms, slowest ${slowest} ms after connecting; heap +${heapMiB.toFixed(1)} MiB, rss +${rssMiB.toFixed(1)} MiB`);
  t.same(c, { exact: 0, refused: VISITORS, corrupt: 0, timeout: 0 }, 'every visitor refused');
  t.ok(slowest < 5_000, 'each one within 5 s of connecting (at once: nothing waits for an agent that is not there)');
  // Generous: the visitors (closed by now) lived in this process too; what the edge keeps of
  // 3000 refused visitors must not add up (a leak of 10 KiB each would be 30 MiB).
  t.ok(heapMiB < 20, `heap growth after GC bounded (${heapMiB.toFixed(1)} MiB)`);
  t.ok(rssMiB < 200, `RSS growth bounded (${rssMiB.toFixed(1)} MiB)`);
  t.same([w.edge.stats().pendingTunnels, w.edge.stats().tunnels], [0, 0], 'nothing left pending at the edge');
});
