// The tunnox side of the benchmarks: one standalone `tunnox server` (edge + API + projector,
// embedded PostgreSQL) that accepts agents over every transport asked for, agents connected over
// a chosen transport, and the mappings between them. `--transport tcp,tls,ws,wss` picks which
// transports a bench measures (default: all of them).
import { join } from 'node:path';
import { canConnect, eventually, freePort, spawnTunnox, startServer, type Proc, type ServerHandle } from '../test/e2e/harness.js';
import { strArg, UsageError } from './lib.js';

/** How an agent reaches the edge. */
export type Transport = 'tcp' | 'tls' | 'ws' | 'wss';
export const TRANSPORTS: readonly Transport[] = ['tcp', 'tls', 'ws', 'wss'];
/** The transports this build of tunnox has. */
const AVAILABLE: readonly Transport[] = ['tcp', 'tls', 'ws', 'wss'];

/** `--transport a,b` (default: every transport this build has), in the order given; unknown names are an error. */
export function transportsArg(): Transport[] {
  const raw = strArg('transport');
  if (raw === undefined) return [...AVAILABLE];
  const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !(TRANSPORTS as readonly string[]).includes(n));
  if (bad.length > 0 || names.length === 0) {
    throw new UsageError(`--transport: ${bad.length ? `unknown ${bad.join(', ')}` : 'empty'}; choose from ${TRANSPORTS.join(', ')} (comma-separated)`);
  }
  const missing = names.filter((n) => !(AVAILABLE as readonly string[]).includes(n));
  if (missing.length > 0) throw new UsageError(`--transport: ${missing.join(', ')} not in this build of tunnox (it has ${AVAILABLE.join(', ')})`);
  return [...new Set(names)] as Transport[];
}

export interface Agent {
  clientId: number;
  transport: Transport;
  proc: Proc;
}

export interface BenchServer {
  server: ServerHandle;
  /** Process id of the `tunnox server` process (the edge lives in it). */
  pid: number;
  userId: number;
  /** Creates a managed client and starts `tunnox client` for it over `transport`; resolves once it is online. */
  agent(name: string, transport: Transport, env?: Record<string, string>): Promise<Agent>;
  /** A public TCP mapping to `targetPort` behind `target`; resolves with the public port once it accepts. */
  publicMapping(target: Agent, targetPort: number): Promise<number>;
  /** A client-to-client mapping: `source` listens on `localPort`, `target` dials `targetPort`; resolves once both agents report it active. */
  clientMapping(source: Agent, target: Agent, targetPort: number, localPort: number): Promise<void>;
  /** Stops every agent started here, then the server. */
  stop(): Promise<void>;
}

export interface BenchServerOptions {
  /** Directory for the server's data (embedded PostgreSQL), agents' credentials. */
  dir: string;
  transports: readonly Transport[];
  /** Extra environment of the server process (e.g. NODE_OPTIONS for the inspector). */
  env?: Record<string, string>;
}

export async function startBenchServer(o: BenchServerOptions): Promise<BenchServer> {
  // One server for every transport asked for: plaintext allowed when tcp or ws is measured, a
  // WebSocket port when ws or wss is (TLS, the default, needs nothing).
  const wsPort = o.transports.some((t) => t === 'ws' || t === 'wss') ? await freePort() : 0;
  const transportArgs = [...(o.transports.some((t) => t === 'tcp' || t === 'ws') ? ['--allow-plaintext'] : []), '--ws-port', String(wsPort)];
  // --visitor-rate 0: the benches open thousands of visitors from 127.0.0.1 as fast as they can;
  // they measure tunnels, not the per-IP rate limiter.
  const server = await startServer(['--data-dir', join(o.dir, 'server'), '--visitor-rate', '0', ...transportArgs], 'bench-admin-key-0123456789abcdef', o.env);
  const agents: Agent[] = [];
  const user = await server.api('POST', '/api/v1/users', { username: `bench${Date.now()}`, email: `bench${Date.now()}@example.com` });
  if (user.status !== 201) throw new Error(`creating the bench user: ${user.status} ${JSON.stringify(user.body)}`);
  const userId = Number(user.body.user_id);
  let agentCount = 0;

  return {
    server,
    pid: server.proc.child.pid!,
    userId,
    async agent(name, transport, env = {}) {
      if (!o.transports.includes(transport)) throw new Error(`the bench server was not started with transport ${transport}`);
      const client = await server.api('POST', '/api/v1/clients', { user_id: userId, client_name: name });
      if (client.status !== 201) throw new Error(`creating client ${name}: ${client.status} ${JSON.stringify(client.body)}`);
      const clientId = Number(client.body.client_id);
      const proc = spawnTunnox(
        [
          'client', ...agentArgs(transport, server, wsPort), '--client-id', String(clientId), '--auth-code', String(client.body.auth_code),
          '--credentials', join(o.dir, `creds-${++agentCount}.json`), '--log-level', 'warn',
        ],
        env,
      );
      const agent: Agent = { clientId, transport, proc };
      agents.push(agent);
      await eventually(`agent ${name} (${transport}) online`, async () => (await server.api('GET', `/api/v1/clients/${clientId}`)).body.status === 'online', 30_000).catch((err: unknown) => {
        throw new Error(`${String(err)}; agent output:\n${proc.lines.slice(-10).join('\n')}`);
      });
      return agent;
    },
    async publicMapping(target, targetPort) {
      const m = await server.api('POST', '/api/v1/mappings', { user_id: userId, target_client_id: target.clientId, protocol: 'tcp', target_host: '127.0.0.1', target_port: targetPort });
      if (m.status !== 201) throw new Error(`creating a public mapping: ${m.status} ${JSON.stringify(m.body)}`);
      const port = Number(m.body.public_port);
      await eventually(`public port ${port} open`, () => canConnect(port));
      await eventually('public mapping active', async () => (await server.api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body?.status === 'active');
      return port;
    },
    async clientMapping(source, target, targetPort, localPort) {
      const m = await server.api('POST', '/api/v1/mappings', {
        user_id: userId, source_client_id: source.clientId, target_client_id: target.clientId, protocol: 'tcp',
        target_host: '127.0.0.1', target_port: targetPort, local_port: localPort,
      });
      if (m.status !== 201) throw new Error(`creating a client-to-client mapping: ${m.status} ${JSON.stringify(m.body)}`);
      await eventually('client-to-client mapping active (both agents reported)', async () => (await server.api('GET', `/api/v1/mappings/${m.body.mapping_id}`)).body?.status === 'active');
    },
    async stop() {
      await Promise.all(agents.map((a) => a.proc.stop()));
      await server.proc.stop();
    },
  };
}

/** How `tunnox client` reaches the bench server over `t` (TLS ones pinned to the server's certificate). */
function agentArgs(t: Transport, server: ServerHandle, wsPort: number): string[] {
  const pin = ['--fingerprint', server.fingerprint];
  switch (t) {
    case 'tcp':
      return ['--server', `tcp://127.0.0.1:${server.controlPort}`];
    case 'tls':
      return ['--server', `127.0.0.1:${server.controlPort}`, ...pin];
    case 'ws':
      return ['--server', `ws://127.0.0.1:${wsPort}/tunnox`];
    case 'wss':
      return ['--server', `wss://127.0.0.1:${wsPort}/tunnox`, ...pin];
  }
}
