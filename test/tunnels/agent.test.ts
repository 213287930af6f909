import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAnonymousClientId } from '../../shared/contracts/ids.js';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import type { AgentFatalError, AgentMapping, RunningAgent } from '../../services/client/index.js';
import { spawnTunnox } from '../e2e/harness.js';
import { canConnect, createWorld, eventually, freePort, sha, startTargetService, visit, visitOutcome, type World } from './world.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Watched {
  agent: RunningAgent;
  configs: { mappings: AgentMapping[]; version: number }[];
  fatal: AgentFatalError[];
  ready: { clientId: number; clientType: string; nodeId: string }[];
}

function watchedAgent(w: World, creds: { clientId?: number; authCode?: string; credentialsPath?: string }): Watched {
  const configs: Watched['configs'] = [];
  const fatal: AgentFatalError[] = [];
  const ready: Watched['ready'] = [];
  const agent = w.agent({
    ...creds,
    onConfig: (mappings, version) => configs.push({ mappings, version }),
    onFatal: (err) => fatal.push(err),
    onReady: (info) => ready.push(info),
  });
  return { agent, configs, fatal, ready };
}

const hasMapping = (a: Watched, id: number, present = true) =>
  a.configs.length > 0 && a.configs[a.configs.length - 1]!.mappings.some((m) => m.mapping_id === id) === present;

/** Two managed agents, A (source) and B (target), and a client-to-client mapping A → B → service. */
async function clientToClient(t: Test, mode: 'reverse' | 'banner') {
  const w = await createWorld(t);
  const service = await startTargetService(t, mode);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: service.port, localPort });
  const agentA = watchedAgent(w, a);
  const agentB = watchedAgent(w, b);
  await eventually(() => agentA.agent.listeningPorts().get(m.mappingId) === localPort, 'source listener');
  await eventually(() => hasMapping(agentB, m.mappingId), 'target config');
  return { w, service, m, localPort, agentA, agentB, user, a, b };
}

t.test('client-to-client: bytes arrive byte-exact both ways, visitor half-closes first', async (t) => {
  const { w, service, localPort } = await clientToClient(t, 'reverse');
  const payload = randomBytes(2 * MiB + 17);
  const got = await visit(localPort, payload);
  t.equal(service.received.length, 1);
  t.equal(sha(service.received[0]!), sha(payload), 'the service received exactly what the visitor sent');
  t.equal(got.length, payload.length);
  t.equal(sha(got), sha(Buffer.from(payload).reverse()), 'the visitor received exactly what the service sent after the half-close');
  await eventually(() => w.edge.stats().tunnels === 0, 'tunnel torn down after both sides closed');
});

t.test('client-to-client: the service half-closes first and still receives the visitor\'s bytes', async (t) => {
  const { service, localPort } = await clientToClient(t, 'banner');
  const payload = randomBytes(300 * KiB);
  const got = await visit(localPort, payload);
  t.equal(sha(got), sha(service.banner), 'banner byte-exact');
  await eventually(() => service.received.length === 1, 'the service saw the visitor half-close');
  t.equal(sha(service.received[0]!), sha(payload), 'visitor bytes byte-exact after the service ended its side');
});

t.test('client-to-client: 20 concurrent tunnels stay separate and byte-exact', async (t) => {
  const { w, service, localPort } = await clientToClient(t, 'reverse');
  const payloads = Array.from({ length: 20 }, (_, i) => randomBytes(64 * KiB + i * 4099));
  const got = await Promise.all(payloads.map((p) => visit(localPort, p)));
  let exact = 0;
  for (let i = 0; i < payloads.length; i++) if (got[i]!.equals(Buffer.from(payloads[i]!).reverse())) exact++;
  t.equal(exact, 20, 'every visitor got exactly its own answer');
  t.same(service.received.map(sha).sort(), payloads.map(sha).sort(), 'the service got every payload exactly once');
  await eventually(() => w.edge.stats().tunnels === 0, 'all tunnels torn down');
});

t.test('public mapping: a visitor on the edge port reaches the target agent\'s service', async (t) => {
  const w = await createWorld(t);
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const b = await w.client(user);
  const agentB = watchedAgent(w, b);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: service.port, publicPort: port });
  await eventually(() => hasMapping(agentB, m.mappingId) && w.edge.stats().publicListeners === 1, 'public mapping ready');

  const payload = randomBytes(MiB + 3);
  const got = await visit(port, payload);
  t.equal(sha(service.received[0]!), sha(payload));
  t.equal(sha(got), sha(Buffer.from(payload).reverse()));

  const many = Array.from({ length: 20 }, () => randomBytes(32 * KiB));
  const answers = await Promise.all(many.map((p) => visit(port, p)));
  t.equal(answers.filter((a, i) => a.equals(Buffer.from(many[i]!).reverse())).length, 20, '20 concurrent public tunnels byte-exact');
});

t.test('public mapping: banner first, then the visitor half-closes', async (t) => {
  const w = await createWorld(t);
  const service = await startTargetService(t, 'banner');
  const user = await w.user();
  const b = await w.client(user);
  const agentB = watchedAgent(w, b);
  const port = await freePort();
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: service.port, publicPort: port });
  await eventually(() => hasMapping(agentB, m.mappingId) && w.edge.stats().publicListeners === 1, 'public mapping ready');
  const payload = randomBytes(100 * KiB);
  t.equal(sha(await visit(port, payload)), sha(service.banner));
  await eventually(() => service.received.length === 1, 'the service saw the visitor half-close');
  t.equal(sha(service.received[0]!), sha(payload));
});

t.test('deleting a mapping closes the agent listener and the public listener', async (t) => {
  const { w, agentA, m, localPort, service, user, b } = await clientToClient(t, 'reverse');
  const port = await freePort();
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: service.port, publicPort: port });
  await eventually(() => w.edge.stats().publicListeners === 1, 'public listener');

  await w.deleteMapping(m.mappingId);
  await eventually(() => !agentA.agent.listeningPorts().has(m.mappingId) && hasMapping(agentA, m.mappingId, false), 'agent dropped the mapping');
  t.notOk(await canConnect(localPort), 'local listener closed');

  await w.deleteMapping(pub.mappingId);
  await eventually(async () => !(await canConnect(port)), 'public listener closed');
  t.equal(w.edge.stats().publicListeners, 0);
});

/** A service whose download never completes: it streams until the visitor goes away. */
async function startStreamingService(t: Test): Promise<number> {
  const chunk = randomBytes(16 * KiB);
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    const timer = setInterval(() => s.write(chunk), 5);
    s.once('close', () => clearInterval(timer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** A visitor that downloads; resolves once `atLeast` bytes arrived, with how the stream ends. */
async function download(port: number, atLeast: number): Promise<{ ended: Promise<{ how: 'end' | 'reset'; code?: string; bytes: number }> }> {
  const s: Socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  let bytes = 0;
  let flowing!: () => void;
  const started = new Promise<void>((r) => (flowing = r));
  s.on('data', (c: Buffer) => {
    bytes += c.length;
    if (bytes >= atLeast) flowing();
  });
  const ended = new Promise<{ how: 'end' | 'reset'; code?: string; bytes: number }>((resolve) => {
    s.once('end', () => {
      resolve({ how: 'end', bytes });
      s.destroy();
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve({ how: 'reset', code: err.code, bytes }));
  });
  await Promise.race([started, ended]);
  return { ended };
}

t.test('deleting a mapping resets its open tunnels: a cut download never looks complete', async (t) => {
  const w = await createWorld(t);
  const servicePort = await startStreamingService(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const agentA = watchedAgent(w, a);
  const agentB = watchedAgent(w, b);
  const localPort = await freePort();
  const publicPort = await freePort();
  const c2c = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: servicePort, localPort });
  const pub = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: servicePort, publicPort });
  await eventually(
    () => agentA.agent.listeningPorts().has(c2c.mappingId) && hasMapping(agentB, pub.mappingId) && w.edge.stats().publicListeners === 1,
    'both mappings ready',
  );
  const viaAgent = await download(localPort, 64 * KiB);
  const viaEdge = await download(publicPort, 64 * KiB);
  await w.deleteMapping(c2c.mappingId);
  t.match(await viaAgent.ended, { how: 'reset', code: 'ECONNRESET' }, 'client-to-client visitor is reset');
  await w.deleteMapping(pub.mappingId);
  t.match(await viaEdge.ended, { how: 'reset', code: 'ECONNRESET' }, 'public visitor is reset');
  await eventually(() => w.edge.stats().tunnels === 0, 'tunnels gone');
});

t.test('a killed target agent process: the downloading visitor is reset; a clean end is still a clean end', async (t) => {
  const w = await createWorld(t);
  const streaming = await startStreamingService(t);
  const banner = await startTargetService(t, 'banner');
  const user = await w.user();
  const b = await w.client(user);
  const dir = await mkdtemp(join(tmpdir(), 'tnx-kill-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const agent = spawnTunnox(['client', '--server', w.edgeAddress, '--client-id', String(b.clientId), '--auth-code', b.authCode, '--credentials', join(dir, 'b.json')]);
  t.teardown(() => void agent.child.kill('SIGKILL'));
  const cleanPort = await freePort();
  const cutPort = await freePort();
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: banner.port, publicPort: cleanPort });
  await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: streaming, publicPort: cutPort });
  await agent.waitForLog((e) => e.msg === 'config applied' && e.mappings === 2);
  await eventually(() => w.edge.stats().publicListeners === 2, 'public listeners');

  // Through the real agent process, the service's FIN is vouched for and arrives as a clean end,
  // and the visitor can still send after it (half-close).
  const payload = randomBytes(200 * KiB);
  t.equal(sha(await visit(cleanPort, payload)), sha(banner.banner), 'banner byte-exact, then a clean end');
  await eventually(() => banner.received.length === 1, 'the service saw the visitor half-close');
  t.equal(sha(banner.received[0]!), sha(payload));

  const dl = await download(cutPort, 256 * KiB);
  agent.child.kill('SIGKILL');
  const end = await dl.ended;
  t.match(end, { how: 'reset', code: 'ECONNRESET' }, 'the agent died mid-download: the visitor sees a reset, not a clean end');
  await agent.exited;
});

t.test('target service down: the visitor is closed, nothing leaks', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const deadPort = await freePort();
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: deadPort, localPort });
  const agentA = watchedAgent(w, a);
  const agentB = watchedAgent(w, b);
  await eventually(() => agentA.agent.listeningPorts().has(m.mappingId) && hasMapping(agentB, m.mappingId), 'ready');
  const outcome = await visitOutcome(localPort, randomBytes(1000));
  t.equal(outcome.received.length, 0, 'visitor closed without data');
  t.equal(w.edge.stats().tunnels, 0);
});

t.test('target agent offline: the visitor is closed', async (t) => {
  const w = await createWorld(t);
  const service = await startTargetService(t, 'reverse');
  const user = await w.user();
  const a = await w.client(user);
  const b = await w.client(user);
  const localPort = await freePort();
  const m = await w.mapping({ userId: user, sourceClientId: a.clientId, targetClientId: b.clientId, targetPort: service.port, localPort });
  const agentA = watchedAgent(w, a);
  await eventually(() => agentA.agent.listeningPorts().has(m.mappingId), 'ready');
  t.equal((await visitOutcome(localPort, randomBytes(10))).received.length, 0, 'visitor closed without data');
  t.equal(service.received.length, 0, 'nothing reached the service');
});

t.test('anonymous agent: registers, saves 0600 credentials, reuses them after a restart', async (t) => {
  const w = await createWorld(t);
  const dir = await mkdtemp(join(tmpdir(), 'tnx-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const credentialsPath = join(dir, 'nested', 'dir', 'credentials.json');

  const first = watchedAgent(w, { credentialsPath });
  await eventually(() => first.ready.length > 0 && first.agent.clientId, 'first ready');
  const clientId = first.agent.clientId!;
  t.ok(isAnonymousClientId(clientId));
  t.equal(first.ready[0]!.clientType, 'anonymous');
  const saved = JSON.parse(await readFile(credentialsPath, 'utf8'));
  t.same(Object.keys(saved).sort(), ['auth_code', 'client_id', 'server']);
  t.equal(saved.client_id, clientId);
  t.equal(saved.server, w.edgeAddress);
  t.equal((await stat(credentialsPath)).mode & 0o777, 0o600, 'credentials readable by the owner only');
  await first.agent.stop();

  const second = watchedAgent(w, { credentialsPath });
  await eventually(() => second.ready.length > 0, 'second ready');
  t.equal(second.agent.clientId, clientId, 'same identity after restart');
  t.equal(second.ready[0]!.clientType, 'anonymous');
  t.same(JSON.parse(await readFile(credentialsPath, 'utf8')), saved, 'file unchanged');
  const count = await w.tdb.db.selectFrom('clients').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  t.equal(Number(count.n), 1, 'no second anonymous client was registered');
});

t.test('anonymous agent keeps its issued identity across reconnects', async (t) => {
  const w = await createWorld(t);
  const agent = watchedAgent(w, {});
  await eventually(() => agent.ready.length === 1, 'ready');
  const id = agent.agent.clientId;
  await w.restartEdge('node-002');
  await eventually(() => agent.ready.length === 2, 'reconnected', 15_000);
  t.equal(agent.agent.clientId, id, 'logged in with the issued code, not registered again');
  t.equal(agent.ready[1]!.clientType, 'anonymous');
  const count = await w.tdb.db.selectFrom('clients').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  t.equal(Number(count.n), 1);
  t.equal(agent.fatal.length, 0);
});

t.test('bad credentials are fatal with a clear error', async (t) => {
  const w = await createWorld(t);
  const dir = await mkdtemp(join(tmpdir(), 'tnx-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const garbled = join(dir, 'garbled.json');
  await writeFile(garbled, '{"server": 1');
  const g = watchedAgent(w, { credentialsPath: garbled });
  await eventually(() => g.fatal.length === 1, 'fatal');
  t.equal(g.fatal[0]!.code, 'TNX_AGENT_CREDENTIALS_INVALID');
  t.match(g.fatal[0]!.message, garbled);

  const other = join(dir, 'other.json');
  await writeFile(other, JSON.stringify({ server: 'elsewhere:8080', client_id: 200000001, auth_code: 'tnxc_x' }));
  const o = watchedAgent(w, { credentialsPath: other });
  await eventually(() => o.fatal.length === 1, 'fatal');
  t.equal(o.fatal[0]!.code, 'TNX_AGENT_CREDENTIALS_MISMATCH');

  const wrong = join(dir, 'wrong.json');
  await writeFile(wrong, JSON.stringify({ server: w.edgeAddress, client_id: 200000001, auth_code: 'tnxc_wrong' }));
  const x = watchedAgent(w, { credentialsPath: wrong });
  await eventually(() => x.fatal.length === 1, 'fatal');
  t.equal(x.fatal[0]!.code, 'TNX_AUTH_FAILED');
  t.match(x.fatal[0]!.message, wrong, 'names the credentials file');

  const user = await w.user();
  const c = await w.client(user);
  const y = watchedAgent(w, { clientId: c.clientId, authCode: 'tnxc_not_it' });
  await eventually(() => y.fatal.length === 1, 'fatal');
  t.equal(y.fatal[0]!.code, 'TNX_AUTH_FAILED');
  t.equal(w.edge.stats().sessions, 0);
});

t.test('a second agent with the same identity replaces the first, which stops', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const a = await w.client(user);
  const first = watchedAgent(w, a);
  await eventually(() => first.ready.length === 1, 'first ready');
  const second = watchedAgent(w, a);
  await eventually(() => second.ready.length === 1, 'second ready');
  await eventually(() => first.fatal.length === 1, 'first told it was replaced');
  t.equal(first.fatal[0]!.code, 'TNX_AGENT_REPLACED');
  t.equal(w.edge.stats().sessions, 1);
  t.equal(second.fatal.length, 0);
});

t.test('an agent reconnects after the edge restarts on the same port and gets its config again', async (t) => {
  const { w, agentA, m, localPort } = await clientToClient(t, 'reverse');
  const before = agentA.ready.length;
  await w.restartEdge('node-002');
  await eventually(() => agentA.ready.length > before, 'reconnected', 15_000);
  t.equal(agentA.ready[agentA.ready.length - 1]!.nodeId, 'node-002');
  t.equal(agentA.agent.listeningPorts().get(m.mappingId), localPort, 'listener kept across the reconnect');
  t.equal(agentA.fatal.length, 0);
});
