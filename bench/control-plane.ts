// Control-plane throughput: commands per second through the Management API (create and delete
// public mappings, each answered read-your-writes) and their latency p50/p99, at 1, 16 and 64
// concurrent callers, while agents connect and disconnect (presence events in the same log). The
// baseline, measured in the same run on the same kind of store: raw event-store appends per second
// with as many concurrent appenders (no contention, no projection, no HTTP).
//
// Usage: node dist/bench/control-plane.js [--commands 1000] [--callers 1,16,64] [--agents 500]
//          [--max-seconds 120] [--nats URL --database URL]
// Standalone (default): `tunnox server` with its embedded PostgreSQL. With --nats/--database:
// JetStream mode; the bench makes its own stream, subject prefix and database, and removes them.
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { connect as netConnect, type Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { buildEnvelope } from '../shared/eventstore/command.js';
import { openJetStreamEventStore } from '../shared/eventstore/jetstream.js';
import { PostgresEventStore } from '../shared/eventstore/postgres.js';
import type { EventStore } from '../shared/eventstore/types.js';
import { createTestDatabase, uniqueName } from '../shared/testkit/pg.js';
import { FrameDecoder } from '../shared/wire/codec.js';
import { AgentFeature } from '../shared/wire/codes.js';
import { decodeMessage, encodeMessage } from '../shared/wire/messages.js';
import { PROTOCOL_VERSION, PacketType } from '../shared/wire/packets.js';
import { startServer, tempDir, TUNNOX_BIN, type ServerHandle } from '../test/e2e/harness.js';
import { median, percentile, strArg } from './lib.js';

const commands = Number(strArg('commands') ?? 1000);
const callerLevels = (strArg('callers') ?? '1,16,64').split(',').map(Number);
const agentCount = Number(strArg('agents') ?? 500);
/** A level stops issuing commands after this long (a slow configuration still reports what it did). */
const maxSeconds = Number(strArg('max-seconds') ?? 120);
const KEY = 'bench-admin-key-0123456789abcdef';

interface Level {
  callers: number;
  commands: number;
  seconds: number;
  rate: number;
  p50: number;
  p99: number;
  /** Commands whose read model had not caught up within the API's wait (202 instead of 201/204). */
  accepted: number;
  failed: number;
}

/** `callers` concurrent loops, each: create a public mapping, then delete it; every request timed. */
async function runLevel(server: ServerHandle, userId: number, targetClientId: number, callers: number, total: number): Promise<Level> {
  const latencies: number[] = [];
  let accepted = 0;
  let failed = 0;
  let issued = 0;
  const start = performance.now();
  const deadline = start + maxSeconds * 1000;
  const caller = async (): Promise<void> => {
    while (issued < total && performance.now() < deadline) {
      issued += 2;
      const t0 = performance.now();
      const created = await server.api('POST', '/api/v1/mappings', { user_id: userId, target_client_id: targetClientId, protocol: 'tcp', target_host: '127.0.0.1', target_port: 9 });
      latencies.push(performance.now() - t0);
      if (created.status === 202) accepted++;
      else if (created.status !== 201) {
        failed++;
        continue;
      }
      const t1 = performance.now();
      const deleted = await server.api('DELETE', `/api/v1/mappings/${created.body.mapping_id}`);
      latencies.push(performance.now() - t1);
      if (deleted.status === 202) accepted++;
      else if (deleted.status !== 204) failed++;
    }
  };
  await Promise.all(Array.from({ length: callers }, caller));
  const seconds = (performance.now() - start) / 1000;
  return { callers, commands: latencies.length, seconds, rate: latencies.length / seconds, p50: median(latencies), p99: percentile(latencies, 99), accepted, failed };
}

/** Raw appends per second: `appenders` concurrent loops, each on its own stream (no contention). */
async function rawAppendRate(store: EventStore, appenders: number, total: number): Promise<number> {
  let issued = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: appenders }, async (_, i) => {
      const stream = `bench.${randomUUID().slice(0, 8)}${i}`;
      let revision: number | 'no_stream' = 'no_stream';
      while (issued < total) {
        issued++;
        const env = buildEnvelope(stream, { type: 'IdAllocated', data: { sequence: 'bench', id: issued } }, { actor: { kind: 'system', id: 'bench' } });
        const res = await store.append(stream, env, { expectedRevision: revision });
        revision = res.revision;
      }
    }),
  );
  return total / ((performance.now() - start) / 1000);
}

/**
 * Agents that log in, stay 0.5–2 s, disconnect and come back (with their session token after the
 * first login), until stopped: presence facts in the log the whole time.
 */
function churn(port: number, clients: { id: number; code: string }[]): { stop(): Promise<void>; logins(): number } {
  let stopped = false;
  let logins = 0;
  const sockets = new Set<Socket>();
  const one = async (c: { id: number; code: string }): Promise<void> => {
    let token: string | undefined;
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const s = netConnect({ port, host: '127.0.0.1', noDelay: true });
        sockets.add(s);
        const decoder = new FrameDecoder();
        let hold: NodeJS.Timeout | undefined;
        const done = (): void => {
          clearTimeout(hold);
          sockets.delete(s);
          s.destroy();
          resolve();
        };
        s.on('error', done);
        s.on('close', done);
        s.write(encodeMessage(PacketType.Handshake, {
          protocol_version: PROTOCOL_VERSION,
          client_version: 'bench-churn',
          features: [AgentFeature.TunnelKey],
          client_id: c.id,
          ...(token ? { session_token: token } : { auth_code: c.code }),
        }));
        s.on('data', (chunk: Buffer) => {
          for (const frame of decoder.push(chunk)) {
            const msg = decodeMessage(frame);
            if (msg.type === PacketType.HandshakeResp) {
              if (!msg.body.ok) {
                token = undefined;
                return done();
              }
              logins++;
              token = msg.body.session_token ?? token;
              hold = setTimeout(done, 500 + Math.random() * 1500);
            } else if (msg.type === PacketType.Command && (msg.body.name === 'config.sync' || msg.body.name === 'config.delta')) {
              s.write(encodeMessage(PacketType.CommandResp, { id: msg.body.id, ok: true, applied: { version: msg.body.payload.version, mappings: [] } }));
            } else if (msg.type === PacketType.Command) {
              s.write(encodeMessage(PacketType.CommandResp, { id: msg.body.id, ok: true }));
            }
          }
        });
      });
      if (!stopped) await new Promise((r) => setTimeout(r, 100 + Math.random() * 400));
    }
  };
  const loops = clients.map((c, i) => new Promise<void>((r) => setTimeout(r, (i % 50) * 40)).then(() => one(c)));
  return {
    logins: () => logins,
    async stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
      await Promise.all(loops);
    },
  };
}

async function main(): Promise<void> {
  // Keeps the process alive and bounded: a level that stalls is reported, never a silent exit.
  const watchdog = setTimeout(() => {
    process.stderr.write('control-plane: gave up (the run took longer than its bound)\n');
    process.exit(1);
  }, (callerLevels.length * (maxSeconds + 60) + 300) * 1000);
  const nats = strArg('nats');
  const mode = nats ? 'JetStream' : 'standalone';
  const dir = await tempDir('tnx-bench-cp');
  const stream = uniqueName('TNX_BENCH').toUpperCase();
  const database = nats ? await createTestDatabase('tnx_bench', false, strArg('database')) : undefined;
  const help = execFileSync(process.execPath, [TUNNOX_BIN, 'server', '--help'], { encoding: 'utf8' });
  const extra = [
    '--api-rate-limit', '0',
    '--public-port-range', '40000-49999',
    // The churning agents speak plain TCP: allowed explicitly where the edge defaults to TLS.
    ...(help.includes('--allow-plaintext') ? ['--allow-plaintext'] : []),
    ...(nats && database ? ['--nats', nats, '--database', database.url, '--stream', stream, '--subject-prefix', stream.toLowerCase()] : []),
  ];
  const server = await startServer(['--data-dir', join(dir.path, 'server'), ...extra], KEY);
  const rawDb = nats ? undefined : await createTestDatabase('tnx_bench_raw');
  const rawNats = nats ? await connect({ servers: nats }) : undefined;
  let agents: ReturnType<typeof churn> | undefined;
  try {
    const user = await server.api('POST', '/api/v1/users', { username: `cp${Date.now()}`, email: 'cp@example.com' });
    const userId = user.body.user_id as number;
    const clients: { id: number; code: string }[] = [];
    for (let i = 0; i < agentCount + 1; i += 16) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(16, agentCount + 1 - i) }, (_, j) => server.api('POST', '/api/v1/clients', { user_id: userId, client_name: `agent ${i + j}` })),
      );
      for (const b of batch) clients.push({ id: b.body.client_id, code: b.body.auth_code });
    }
    const target = clients.shift()!;
    agents = agentCount > 0 ? churn(server.controlPort, clients) : undefined;
    // Let the first logins (scrypt) pass before measuring.
    await new Promise((r) => setTimeout(r, 3000));

    const rawStore: EventStore = rawDb
      ? new PostgresEventStore({ db: rawDb.db, pool: rawDb.pool })
      : await openJetStreamEventStore({ nc: rawNats!, streamName: `${stream}_RAW`, subjectPrefix: `${stream.toLowerCase()}raw` });
    process.stdout.write(
      `control-plane (${mode}): create + delete public mappings through the API, read-your-writes, ${commands} commands per level, ` +
        `${agentCount} agents connecting and disconnecting throughout\n`,
    );
    process.stdout.write(`(a level stops after ${maxSeconds} s; commands = API requests, each several appends: a create allocates an id, takes a quota slot, reserves a port, records the mapping)\n`);
    process.stdout.write('callers  commands/s   p50 ms   p99 ms   202s  failed  | raw appends/s (same callers)  ratio\n');
    const levels: Level[] = [];
    for (const callers of callerLevels) {
      const level = await runLevel(server, userId, target.id, callers, commands);
      const raw = await rawAppendRate(rawStore, callers, commands);
      levels.push(level);
      process.stdout.write(
        `${String(callers).padStart(7)}  ${level.rate.toFixed(1).padStart(10)}  ${level.p50.toFixed(1).padStart(7)}  ${level.p99.toFixed(1).padStart(7)}  ` +
          `${String(level.accepted).padStart(5)}  ${String(level.failed).padStart(6)}  | ${raw.toFixed(0).padStart(28)}  ${(level.rate / raw).toFixed(3)}\n`,
      );
    }
    const first = levels[0]!;
    const last = levels[levels.length - 1]!;
    process.stdout.write(
      `agents logged in ${agents?.logins() ?? 0} times during the run; commands/s at ${last.callers} callers / at ${first.callers}: ${(last.rate / first.rate).toFixed(2)}x ` +
        `(goal: >= 1000/s JetStream, >= 500/s standalone, p99 < 50 ms, not falling as callers rise)\n`,
    );
    await rawStore.close();
  } catch (err) {
    process.stderr.write(`server's last lines:\n${server.proc.lines.slice(-15).join('\n')}\n`);
    throw err;
  } finally {
    await agents?.stop();
    await server.proc.stop();
    await rawDb?.drop();
    if (rawNats) {
      const jsm = await jetstreamManager(rawNats);
      for await (const s of jsm.streams.list()) if (s.config.name.startsWith(stream) || s.config.name.startsWith(`KV_${stream.toLowerCase()}`)) await jsm.streams.delete(s.config.name).catch(() => undefined);
      await rawNats.close();
    }
    await database?.drop();
    await dir.remove();
    clearTimeout(watchdog);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`control-plane: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
