// Reconnect storm, the cost of a login: N agents (the agent library, all in this process) on one
// in-process edge; the edge restarts and every agent logs in again at once. Measured in the same
// run, on the same restart path: the storm with auth codes (scrypt per login, bounded by the
// edge's credential-check cap) against the storm with session tokens (an HMAC per login), and the
// ratio. Usage: node dist/bench/reconnect.js [--agents 500] [--database postgres://…/postgres]
// The bench creates its own PostgreSQL database (event log + read models, standalone mode) on that
// server and drops it afterwards. The lead's reconnect-storm bench extends this to kill -9.
import { generateMappingMasterKey } from '../shared/platform/mapping-secrets.js';
import { randomBytes } from 'node:crypto';
import { startAgent, type RunningAgent } from '../services/client/index.js';
import { MemoryEdgeView, generateSessionTokenKey, startEdge, startReadModelViewFeed, type RunningEdge } from '../services/edge/index.js';
import { createProjectionWaiter, startProjector } from '../services/projector/index.js';
import { createMemoryBus } from '../shared/bus/memory.js';
import { registerAnonymousClient } from '../shared/domain/index.js';
import { PostgresEventStore } from '../shared/eventstore/postgres.js';
import { silentLogger } from '../shared/platform/logger.js';
import { hashSecret } from '../shared/platform/secrets.js';
import { createTestDatabase, TEST_PG_ADMIN_URL } from '../shared/testkit/pg.js';
import { strArg } from './lib.js';

const MAX_AGENTS = 5_000;
const agentCount = Number(strArg('agents') ?? 500);
if (!Number.isInteger(agentCount) || agentCount < 1 || agentCount > MAX_AGENTS) {
  process.stderr.write(`--agents must be an integer between 1 and ${MAX_AGENTS}\n`);
  process.exit(2);
}
/** Bound on every phase: a storm that does not settle in this time fails the bench. */
const PHASE_TIMEOUT_MS = 300_000;

async function main(): Promise<void> {
  const logger = silentLogger();
  const tdb = await createTestDatabase('tnx_bench_reconnect', true, strArg('database') ?? TEST_PG_ADMIN_URL);
  const store = new PostgresEventStore({ db: tdb.db, pool: tdb.pool, pollIntervalMs: 20 });
  const bus = createMemoryBus();
  const projector = await startProjector({ store, db: tdb.db, bus, logger });
  const waiter = createProjectionWaiter({ db: tdb.db, bus });
  const agents: RunningAgent[] = [];
  let edge: RunningEdge | undefined;
  let feed: { stop(): Promise<void> } | undefined;
  try {
    // N clients sharing one auth code: every auth-code login still runs its own full scrypt
    // check; sharing only saves the bench N hashes at set-up.
    const authCode = `tnxc_${randomBytes(24).toString('base64url')}`;
    const authCodeHash = await hashSecret(authCode);
    const ids: number[] = [];
    let last = 0;
    for (let i = 0; i < agentCount; i += 25) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(25, agentCount - i) }, () => registerAnonymousClient(store, { authCodeHash }, { actor: { kind: 'system', id: 'bench' } })),
      );
      for (const r of batch) {
        ids.push(r.clientId);
        last = Math.max(last, r.position);
      }
    }
    if (!(await waiter.waitFor(last, 60_000))) throw new Error('projection did not catch up with the registrations');

    const key = generateSessionTokenKey();
    const mappingKey = generateMappingMasterKey();
    const readyOn = new Map<string, Set<number>>();
    let controlPort = 0;
    /** A new edge process in all but name: a fresh view loaded from the read models. */
    const launch = async (nodeId: string, tokens: boolean): Promise<{ edge: RunningEdge; listeningAt: number }> => {
      if (edge) await edge.stop();
      await feed?.stop();
      const view = new MemoryEdgeView();
      feed = await startReadModelViewFeed({ db: tdb.db, bus, view, logger });
      readyOn.set(nodeId, new Set());
      // From here: agents may connect as soon as the edge listens, before startEdge resolves.
      const listeningAt = performance.now();
      const started = await startEdge({
        store,
        view,
        logger,
        nodeId,
        controlHost: '127.0.0.1',
        controlPort,
        mappingKey,
        allowPlaintext: true,
        ...(tokens ? { sessionTokens: { key } } : {}),
      });
      edge = started;
      controlPort = started.controlPort;
      return { edge: started, listeningAt };
    };
    const allReady = async (nodeId: string, since: number): Promise<number> => {
      const deadline = since + PHASE_TIMEOUT_MS;
      while ((readyOn.get(nodeId)?.size ?? 0) < agentCount) {
        if (performance.now() > deadline) throw new Error(`only ${readyOn.get(nodeId)?.size} of ${agentCount} agents logged in on ${nodeId}`);
        await new Promise((r) => setTimeout(r, 5));
      }
      return performance.now() - since;
    };

    // Cold start on an edge that issues no tokens: every agent logs in with its auth code.
    const cold = await launch('node-001', false);
    const t0 = performance.now();
    for (const clientId of ids) {
      agents.push(
        startAgent({
          server: `tcp://127.0.0.1:${controlPort}`,
          clientId,
          authCode,
          logger,
          // Short and equal for both storms, so the backoff adds little and the same to each.
          reconnectMinMs: 20,
          reconnectMaxMs: 200,
          onReady: (info) => readyOn.get(info.nodeId)?.add(info.clientId),
          onFatal: (err) => process.stderr.write(`agent ${clientId} gave up: ${err.code} ${err.message}\n`),
        }),
      );
    }
    const coldMs = await allReady('node-001', t0);
    const coldStats = cold.edge.stats();

    // Restart onto an edge that issues tokens: the agents hold none yet, so this storm is all scrypt.
    const byCode = await launch('node-002', true);
    const codeMs = await allReady('node-002', byCode.listeningAt);
    const codeStats = byCode.edge.stats();

    // Restart again (same key, as in a cluster): every agent presents the token it was given.
    const byToken = await launch('node-003', true);
    const tokenMs = await allReady('node-003', byToken.listeningAt);
    const tokenStats = byToken.edge.stats();

    const f = (ms: number): string => `${ms.toFixed(0)} ms`;
    const rate = (ms: number): string => `${((agentCount / ms) * 1000).toFixed(0)} logins/s`;
    const counts = (s: ReturnType<RunningEdge['stats']>): string => `scrypt checks ${s.credentialChecks}, token logins ${s.tokenLogins}, tokens refused ${s.tokensRejected}`;
    process.stdout.write(`reconnect storm: ${agentCount} agents in one process, one in-process edge (standalone view), edge restarted between storms\n`);
    process.stdout.write(`  cold start, auth codes:            ${f(coldMs).padStart(8)}  ${rate(coldMs).padStart(14)}   (${counts(coldStats)})\n`);
    process.stdout.write(`  after a restart, auth codes:       ${f(codeMs).padStart(8)}  ${rate(codeMs).padStart(14)}   (${counts(codeStats)})\n`);
    process.stdout.write(`  after a restart, session tokens:   ${f(tokenMs).padStart(8)}  ${rate(tokenMs).padStart(14)}   (${counts(tokenStats)})\n`);
    process.stdout.write(`  auth codes / session tokens: ${(codeMs / tokenMs).toFixed(1)}x\n`);
    if (tokenStats.credentialChecks !== 0 || tokenStats.tokenLogins !== agentCount) {
      throw new Error('the token storm ran scrypt or missed token logins: the figures above do not compare what they claim');
    }
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await edge?.stop();
    await feed?.stop();
    waiter.close();
    await projector.stop();
    await store.close();
    await bus.close();
    await tdb.drop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
