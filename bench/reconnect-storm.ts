// Failover storm: N agents (the agent library, all in this one load process) on one edge of a
// cluster of role processes (projector, api, three edges on 127.0.0.1-3); kill -9 that edge and
// time until every agent is online on the others (they log in there with their session tokens). The baseline, measured in the same run, is the
// first login of the same N agents with their auth codes (scrypt on the edge) onto that edge.
// Usage: node dist/bench/reconnect-storm.js [--agents 2000] [--timeout 180]
import { startAgent, type RunningAgent } from '../services/client/index.js';
import { startCluster } from '../test/e2e/cluster-harness.js';
import { freePort } from '../shared/net/listen.js';
import { createLogger } from '../shared/platform/logger.js';
import { numArg } from './lib.js';

/** Resolves with the ms until `done()` holds (polled every 20 ms), or rejects after `timeoutMs`. */
async function until(what: string, done: () => boolean, timeoutMs: number, progress: () => string): Promise<number> {
  const start = performance.now();
  let lastReport = start;
  while (!done()) {
    const now = performance.now();
    if (now - start > timeoutMs) throw new Error(`${what}: not done after ${timeoutMs / 1000} s (${progress()})`);
    if (now - lastReport > 5_000) {
      process.stdout.write(`  … ${progress()}\n`);
      lastReport = now;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - start;
}

async function main(): Promise<void> {
  const n = Math.max(1, Math.min(numArg('agents', 2000), 5000));
  const timeoutMs = numArg('timeout', 180) * 1000;
  // Agents log only errors: a storm of 2000 reconnects is 2000 warnings otherwise.
  const logger = createLogger({ level: 'error', name: 'storm-agents' });
  // Edge 1 runs alone while the agents log in (so all of them land there); edges 2 and 3 start on
  // ports chosen now, which the agents already list.
  const cluster = await startCluster({ edges: ['127.0.0.1'], name: 'tnx_bench_storm' });
  const later = [{ host: '127.0.0.2', port: await freePort('127.0.0.2') }, { host: '127.0.0.3', port: await freePort('127.0.0.3') }];
  const agents: RunningAgent[] = [];
  try {
    const e1 = cluster.edges[0]!;
    const user = (await cluster.api('POST', '/api/v1/users', { username: 'storm', email: 'storm@example.com' })).body.user_id as number;
    process.stdout.write(`reconnect storm: ${n} agents in one process, 3 edges; creating ${n} managed clients…\n`);
    const clients: { client_id: number; auth_code: string }[] = [];
    for (let i = 0; i < n; i += 16) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(16, n - i) }, (_, j) => cluster.api('POST', '/api/v1/clients', { user_id: user, client_name: `storm-${i + j}` })),
      );
      for (const r of batch) {
        if (r.status !== 201) throw new Error(`client creation failed: ${r.status} ${JSON.stringify(r.body)}`);
        clients.push(r.body);
      }
    }
    const online = (except?: string) => agents.filter((a) => a.status().connected && a.status().nodeId !== except).length;
    for (const c of clients) {
      agents.push(
        startAgent({
          // Every agent knows all three edges and starts with the first: all of them land on e1.
          server: [e1.controlAddress, ...later.map((l) => `${l.host}:${l.port}`)],
          serverStart: 'first',
          clientId: c.client_id,
          authCode: c.auth_code,
          logger,
          reconnectMinMs: 500,
          reconnectMaxMs: 5_000,
        }),
      );
    }
    const loginMs = await until('first login', () => online() === n, timeoutMs, () => `${online()}/${n} online`);
    const onE1 = agents.filter((a) => a.status().nodeId === e1.nodeId).length;
    process.stdout.write(`first login, auth codes (scrypt on the edge): ${n} agents online in ${(loginMs / 1000).toFixed(2)} s (${onE1} on ${e1.nodeId})\n`);
    for (const l of later) await cluster.startEdge(l.host, ['--control-port', String(l.port)]);
    process.stdout.write(`started 2 more edges; every agent is still on ${e1.nodeId}: ${agents.filter((a) => a.status().nodeId === e1.nodeId).length}/${n}\n`);

    e1.proc.child.kill('SIGKILL');
    const stormMs = await until('failover', () => online(e1.nodeId) === n, timeoutMs, () => `${online(e1.nodeId)}/${n} online elsewhere`);
    const where = new Map<string, number>();
    for (const a of agents) where.set(String(a.status().nodeId), (where.get(String(a.status().nodeId)) ?? 0) + 1);
    process.stdout.write(
      `kill -9 ${e1.nodeId}: all ${n} agents online on the other edges in ${(stormMs / 1000).toFixed(2)} s ` +
        `(${[...where].map(([k, v]) => `${v} on ${k}`).join(', ')})   (goal: 2000 agents in < 10 s)\n`,
    );
    process.stdout.write(`ratio failover / first login: ${(stormMs / loginMs).toFixed(2)}\n`);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await cluster.close();
  }
}

await main();
