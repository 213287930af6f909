import t from 'tap';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tcpSockets, type TcpSocket } from '../e2e/procfs.js';
import { createWorld, eventually, freePort } from './world.js';

/**
 * TCP keepalive on every socket Tunnox owns (issue 7), read from the kernel: an idle established
 * socket with SO_KEEPALIVE has its keepalive timer armed (timer 2 in /proc/net/tcp), one without
 * has none (0). Edge, both agents and the test's own peers run in this process, so each socket is
 * told apart by its ports: the edge's (control and public port), the source agent's (its local
 * listener, its tunnel and control connections) and the target agent's (its dial to the service).
 * The test's own visitor sockets and the service's accepted socket are plain Node sockets: they
 * show what "no keepalive" looks like.
 */

t.test('keepalive is armed on control, tunnel, visitor, local-visitor and target sockets', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const held = new Set<Socket>();
  const service = createServer((s) => {
    held.add(s);
    s.on('error', () => undefined);
    s.resume();
  });
  await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
  const servicePort = (service.address() as AddressInfo).port;
  t.teardown(() => {
    for (const s of held) s.destroy();
    service.close();
  });
  const localPort = await freePort();
  const publicPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: servicePort, localPort });
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: servicePort, publicPort });
  const source = w.agent({ clientId: a.clientId, authCode: a.authCode });
  w.agent({ clientId: b.clientId, authCode: b.authCode });
  await eventually(() => source.listeningPorts().get(c2c.mappingId) === localPort && w.edge.stats().publicListeners === 1, 'listeners up');
  await new Promise((r) => setTimeout(r, 500)); // both agents' configs acknowledged

  // Two idle tunnels: a local visitor through the source agent, and a public visitor.
  const visitors: Socket[] = [];
  t.teardown(() => visitors.forEach((v) => v.destroy()));
  for (const port of [localPort, publicPort]) {
    const v = connect({ host: '127.0.0.1', port });
    v.on('error', () => undefined);
    visitors.push(v);
    v.write('hello');
  }
  await eventually(() => held.size === 2 && w.edge.stats().tunnels === 2, 'two tunnels reach the service');
  const visitorPorts = visitors.map((v) => v.localPort!);

  const control = w.edge.controlPort;
  const kinds: [string, (s: TcpSocket) => boolean][] = [
    ['edge: accepted control and tunnel connections', (s) => s.localPort === control],
    ['agents: control and tunnel connections to the edge', (s) => s.remotePort === control],
    ['edge: public-port visitor', (s) => s.localPort === publicPort],
    ["source agent: its local visitor", (s) => s.localPort === localPort],
    ['target agent: its dials to the service', (s) => s.remotePort === servicePort],
  ];
  const ours = (s: TcpSocket) => s.state === '01' && kinds.some(([, f]) => f(s));
  const all = await eventually(() => {
    const socks = tcpSockets(process.pid).filter(ours);
    // Idle: the timers settle on keepalive once the last bytes are acknowledged.
    return socks.length > 0 && socks.every((s) => s.timer === 2) ? socks : undefined;
  }, 'every Tunnox socket idle with its keepalive timer armed', 15_000).catch((err: unknown) => {
    throw new Error(`${String(err)}: ${JSON.stringify(tcpSockets(process.pid).filter(ours))}`);
  });
  for (const [what, f] of kinds) {
    const n = all.filter(f).length;
    t.ok(n > 0, `${what}: ${n} socket(s), keepalive armed`);
  }
  // 2 control connections x 2 ends, 3 tunnel halves (source + 2 targets) x 2 ends at the control port.
  t.equal(all.filter((s) => s.localPort === control).length, 5, 'the edge holds 2 control and 3 tunnel connections');
  const plain = tcpSockets(process.pid).filter((s) => s.state === '01' && (visitorPorts.includes(s.localPort) || s.localPort === servicePort));
  t.equal(plain.length, 4, "the test's visitors and the service's accepted sockets");
  t.ok(plain.every((s) => s.timer === 0), 'plain Node sockets have no keepalive timer: the check tells them apart');
});
