import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { eventually, spawnTunnox, startServer, tempDir } from './harness.js';

/**
 * `tunnox server --anonymous-ttl` (issue 7) with a short TTL: an anonymous `tunnox client` that
 * registered, ran and stopped expires through ClientExpired (visible in the event log through the
 * API, caused by its last ClientDisconnected), disappears from the API, and its saved credentials
 * no longer log in.
 */

t.test('an anonymous client unused for --anonymous-ttl expires, through an event', async (t) => {
  const dir = await tempDir('tnx-expiry');
  t.teardown(() => dir.remove());
  const server = await startServer(['--data-dir', join(dir.path, 'data'), '--anonymous-ttl', '3s'], `key-${randomBytes(12).toString('hex')}`);
  t.teardown(() => server.proc.stop());
  const { api } = server;
  const credentials = join(dir.path, 'anon.json');
  const agent = spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--credentials', credentials]);
  t.teardown(() => agent.stop());
  await agent.waitForLog((e) => e.msg === 'connected to the edge');
  const saved = JSON.parse(await readFile(credentials, 'utf8')) as { client_id: number };
  const id = saved.client_id;
  await eventually('anonymous client online', async () => (await api('GET', `/api/v1/clients/${id}`)).body.status === 'online', 30_000);
  // Online longer than the TTL: a client in use never expires.
  await new Promise((r) => setTimeout(r, 5_000));
  t.equal((await api('GET', `/api/v1/clients/${id}`)).status, 200, 'still there while online');
  t.equal(await agent.stop(), 0, 'agent stopped');

  const stoppedAt = Date.now();
  await eventually('the client is gone from the API', async () => (await api('GET', `/api/v1/clients/${id}`)).status === 404, 30_000);
  const after = Date.now() - stoppedAt;
  t.ok(after >= 2_500, `expired ${after} ms after the agent stopped (TTL 3 s)`);
  const events = (await api('GET', `/api/v1/events?aggregate=client:${id}`)).body.events as { type: string; id: string; causation_id: string | null; data: Record<string, unknown>; actor: { kind: string } }[];
  t.same(events.map((e) => e.type), ['ClientRegistered', 'ClientExpired']);
  const sessions = (await api('GET', `/api/v1/events?aggregate=client-session:${id}`)).body.events as { type: string; id: string; occurred_at: string }[];
  const last = sessions[sessions.length - 1]!;
  t.equal(last.type, 'ClientDisconnected');
  const expired = events[1]!;
  t.equal(expired.causation_id, last.id, 'caused by the last ClientDisconnected');
  t.match(expired.data, { client_id: id, ttl_seconds: 3, inactive_since: last.occurred_at });
  t.equal(expired.actor.kind, 'system');

  // The saved credentials are dead: the agent is refused and stops (exit 1), saying why.
  const again = spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--credentials', credentials]);
  t.teardown(() => again.stop());
  t.equal(await again.exited, 1, 'an agent with expired credentials exits 1');
  t.ok(again.lines.some((l) => l.includes('TNX_AUTH_FAILED')), 'refused as unknown credentials');
  t.equal((await api('GET', `/api/v1/events?aggregate=client-session:${id}`)).body.events.length, sessions.length, 'nothing more recorded for it');
});
