import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { echoService, flood, tally, visitor } from '../tunnels/visitors.js';
import { eventually, freePort, spawnTunnox, startServer, tempDir, type Proc } from './harness.js';

// Thousands of sockets on a machine shared with other suites: more than the default 180 s per file.
t.setTimeout(300_000);

/**
 * Issue 7, with real processes: 3000 visitors flood a public port of `tunnox server` (flood
 * limits at their defaults, the per-IP rate off since every visitor comes from 127.0.0.1).
 * Against a `tunnox client` target agent: its control session survives (the same session,
 * config pushes still applied) and every tunnel that succeeds is byte-exact. Against a target
 * that is offline: every visitor is refused at once and the server's RSS stays bounded.
 */

const VISITORS = 3000;

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line?.split(/\s+/)[1] ?? 0) / 1024;
}

t.test(`${VISITORS} visitors against tunnox server: the agent's session survives; offline target: refused at once, memory bounded`, async (t) => {
  const dir = await tempDir('tnx-flood-');
  t.teardown(() => dir.remove());
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--visitor-rate', '0', '--public-port-range', '36100-36149'], 'flood-admin-key-0123456789abcdef');
  const procs: Proc[] = [];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await server.proc.stop();
  });
  const { api } = server;
  const user = (await api('POST', '/api/v1/users', { username: 'flood', email: 'flood@example.com' })).body.user_id as number;
  const client = async (name: string): Promise<{ client_id: number; auth_code: string }> =>
    (await api('POST', '/api/v1/clients', { user_id: user, client_name: name })).body;
  const target = await client('target');
  const offline = await client('offline');
  const echo = await echoService(t);
  procs.push(
    spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(target.client_id), '--auth-code', target.auth_code, '--credentials', join(dir.path, 'target.json')]),
  );
  await eventually('agent online', async () => (await api('GET', `/api/v1/clients/${target.client_id}`)).body.status === 'online', 30_000);
  const publicMapping = async (targetClientId: number): Promise<number> => {
    // The server allocates the public port from its range (a port picked here could lie outside it).
    const m = await api('POST', '/api/v1/mappings', { user_id: user, target_client_id: targetClientId, protocol: 'tcp', target_host: '127.0.0.1', target_port: echo });
    t.equal(m.status, 201, 'mapping created');
    return m.body.public_port as number;
  };
  const sessions = async (): Promise<{ connected: number; disconnected: number }> => {
    const page = (await api('GET', '/api/v1/events?type=ClientConnected,ClientDisconnected&limit=500')).body as { events: { type: string; data: { client_id: number } }[] };
    const mine = page.events.filter((e) => e.data.client_id === target.client_id);
    return { connected: mine.filter((e) => e.type === 'ClientConnected').length, disconnected: mine.filter((e) => e.type === 'ClientDisconnected').length };
  };

  const port = await publicMapping(target.client_id);
  await eventually('a first tunnel', async () => (await visitor(port, 2_000)).kind === 'exact', 30_000);
  t.same(await sessions(), { connected: 1, disconnected: 0 }, 'one session before the flood');
  const started = Date.now();
  const c = tally(await flood(port, VISITORS, 60_000));
  t.comment(`online target: ${VISITORS} visitors in ${Date.now() - started} ms: ${JSON.stringify(c)}`);
  t.equal(c.corrupt, 0, 'no tunnel carried wrong or truncated bytes');
  t.equal(c.timeout, 0, 'every visitor answered or refused');
  t.ok(c.exact > 0, `${c.exact} byte-exact tunnels`);
  t.same(await sessions(), { connected: 1, disconnected: 0 }, 'the same session after the flood: no disconnect, no new login');
  const port2 = await publicMapping(target.client_id);
  await eventually('a mapping created after the flood reaches the agent', async () => (await visitor(port2, 2_000)).kind === 'exact', 30_000);
  t.same(await sessions(), { connected: 1, disconnected: 0 }, 'still the same session');

  const dead = await publicMapping(offline.client_id);
  await eventually('public port of the offline target open', async () => (await visitor(dead, 2_000)).kind === 'refused', 30_000);
  await flood(dead, 200, 10_000); // warm-up
  const pid = server.proc.child.pid!;
  const before = rssMiB(pid);
  const offStarted = Date.now();
  const outcomes = await flood(dead, VISITORS, 30_000);
  const off = tally(outcomes);
  const slowest = Math.max(...outcomes.map((o) => o.closedAfterMs));
  const grown = rssMiB(pid) - before;
  t.comment(`offline target: ${VISITORS} visitors in ${Date.now() - offStarted} ms, slowest refusal ${slowest} ms; server RSS ${before.toFixed(0)} MiB, +${grown.toFixed(1)} MiB`);
  t.same(off, { exact: 0, refused: VISITORS, corrupt: 0, timeout: 0 }, 'every visitor refused');
  t.ok(slowest < 5_000, 'each within 5 s of connecting');
  t.ok(grown < 150, `server RSS growth bounded (+${grown.toFixed(1)} MiB)`);
});
