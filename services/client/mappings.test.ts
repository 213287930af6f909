import t, { type Test } from 'tap';
import { EdgeDialer } from '../../shared/transport/dial.js';
import { parseEdgeUrl } from '../../shared/transport/url.js';
import { connect, createServer, type AddressInfo } from 'node:net';
import { silentLogger } from '../../shared/platform/logger.js';
import type { AgentMapping } from '../../shared/wire/messages.js';
import { MappingRuntime, type TunnelContext } from './mappings.js';
import { freePort } from '../../shared/net/listen.js';

const SECRET = 's'.repeat(64);


function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

function runtime(t: Test, ctx?: TunnelContext): MappingRuntime {
  const r = new MappingRuntime(silentLogger(), () => ctx);
  t.teardown(() => r.stop());
  return r;
}

const source = (id: number, port: number): AgentMapping => ({ mapping_id: id, protocol: 'tcp', role: 'source', local_host: '127.0.0.1', local_port: port, secret_key: SECRET });
const ok = (mapping_id: number, role: 'source' | 'target') => ({ mapping_id, role, ok: true });
const target = (id: number, host: string, port: number): AgentMapping => ({ mapping_id: id, protocol: 'tcp', role: 'target', target_host: host, target_port: port, secret_key: SECRET });

t.test('config diff: add, keep, change and remove source listeners', async (t) => {
  const r = runtime(t);
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  t.same(await r.apply([source(1, p1), source(2, p2)]), [ok(1, 'source'), ok(2, 'source')]);
  t.same([...r.listeningPorts()].sort(), [[1, p1], [2, p2]]);
  t.ok((await canConnect(p1)) && (await canConnect(p2)));

  // 1 unchanged, 2 moves to p3, 3 is new (target role: no listener).
  t.same(await r.apply([source(1, p1), source(2, p3), target(3, '127.0.0.1', 9)]), [ok(1, 'source'), ok(2, 'source'), ok(3, 'target')], 'one outcome per mapping, kept ones included');
  t.same([...r.listeningPorts()].sort(), [[1, p1], [2, p3]]);
  t.notOk(await canConnect(p2), 'the old port of a changed mapping is closed');
  t.ok(await canConnect(p3));

  t.same(await r.apply([]), []);
  t.same([...r.listeningPorts()], []);
  t.notOk(await canConnect(p1), 'a removed mapping stops listening at once');
  t.notOk(await canConnect(p3));
});

t.test('a port that cannot be bound is reported and retried on the next config', async (t) => {
  const blocker = createServer();
  await new Promise<void>((res) => blocker.listen(0, '127.0.0.1', res));
  const port = (blocker.address() as AddressInfo).port;
  const r = runtime(t);
  const outcomes = await r.apply([source(7, port), target(8, '127.0.0.1', 9)]);
  t.same(outcomes, [{ mapping_id: 7, role: 'source', ok: false, error: `local port ${port} in use (127.0.0.1:${port}: EADDRINUSE)` }, ok(8, 'target')], 'a plain reason; the other mapping still starts');
  await new Promise((res) => blocker.close(res));
  t.same(await r.apply([source(7, port), target(8, '127.0.0.1', 9)]), [ok(7, 'source'), ok(8, 'target')], 'bound once the port is free');
  t.equal(r.listeningPorts().get(7), port);
});

t.test('target requests: only the configured host:port of a target mapping is ever dialed', async (t) => {
  const deadPort = await freePort();
  const ctx: TunnelContext = { edge: parseEdgeUrl('tcp://127.0.0.1:9', 8080), dialer: new EdgeDialer({ trust: {} }), clientId: 600000001, clockOffsetMs: 0, timeoutMs: 1_000, attestEnd: () => undefined };
  const r = runtime(t, ctx);
  await r.apply([target(5, '127.0.0.1', deadPort), source(6, await freePort())]);

  t.match(await r.handleTunnelRequest({ tunnel_id: 't1', mapping_id: 99, target_host: '127.0.0.1', target_port: deadPort }, ctx), {
    ok: false,
    error: { code: 'TNX_AGENT_UNKNOWN_MAPPING' },
  });
  t.match(await r.handleTunnelRequest({ tunnel_id: 't2', mapping_id: 6, target_host: '127.0.0.1', target_port: deadPort }, ctx), {
    ok: false,
    error: { code: 'TNX_AGENT_UNKNOWN_MAPPING' },
  }, 'a source mapping is not a target');
  t.match(await r.handleTunnelRequest({ tunnel_id: 't3', mapping_id: 5, target_host: '10.0.0.1', target_port: deadPort }, ctx), {
    ok: false,
    error: { code: 'TNX_AGENT_TARGET_MISMATCH' },
  }, 'another host is refused, never dialed');
  t.match(await r.handleTunnelRequest({ tunnel_id: 't4', mapping_id: 5, target_host: '127.0.0.1', target_port: deadPort + 1 }, ctx), {
    ok: false,
    error: { code: 'TNX_AGENT_TARGET_MISMATCH' },
  });
  t.match(await r.handleTunnelRequest({ tunnel_id: 't5', mapping_id: 5, target_host: '127.0.0.1', target_port: deadPort }, ctx), {
    ok: false,
    error: { code: 'TNX_AGENT_DIAL_FAILED', message: /ECONNREFUSED/ },
  }, 'a dial failure is answered with the reason');
});
