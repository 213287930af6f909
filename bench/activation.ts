// Mapping activation latency: time from `POST /api/v1/mappings` returning to the source agent's
// local_port accepting a connection. 100 trials (client-to-client mappings created and deleted in
// turn), p50/p99. Usage: node dist/bench/activation.js [--trials 100] [--nats URL --database URL]
// In JetStream mode the bench creates its own database on the --database server (and its own
// stream, buckets and subject prefix) and drops them afterwards: shared services stay clean.
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { createTestDatabase, uniqueName } from '../shared/testkit/pg.js';
import { canConnect, eventually, freePort, spawnTunnox, startServer, tempDir } from '../test/e2e/harness.js';
import { median, percentile, strArg } from './lib.js';

const trials = Number(strArg('trials') ?? 100);

async function main(): Promise<void> {
  const dir = await tempDir('tnx-bench-act');
  // JetStream mode gets its own stream and subject prefix, deleted afterwards (the NATS server is shared).
  const stream = uniqueName('TNX_BENCH').toUpperCase();
  const database = strArg('nats') ? await createTestDatabase('tnx_bench', false, strArg('database')) : undefined;
  const extra = database
    ? ['--nats', strArg('nats')!, '--database', database.url, '--stream', stream, '--subject-prefix', stream.toLowerCase()]
    : [];
  const server = await startServer(['--data-dir', join(dir.path, 'server'), ...extra], 'bench-admin-key-0123456789abcdef');
  const agents: ReturnType<typeof spawnTunnox>[] = [];
  try {
    const user = await server.api('POST', '/api/v1/users', { username: `act${Date.now()}`, email: 'act@example.com' });
    const ids: number[] = [];
    for (const name of ['source', 'target']) {
      const c = await server.api('POST', '/api/v1/clients', { user_id: user.body.user_id, client_name: name });
      agents.push(spawnTunnox(['client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(c.body.client_id),
        '--auth-code', c.body.auth_code, '--credentials', join(dir.path, `${name}.json`), '--log-level', 'warn']));
      await eventually(`${name} online`, async () => (await server.api('GET', `/api/v1/clients/${c.body.client_id}`)).body.status === 'online');
      ids.push(c.body.client_id);
    }
    const samples: number[] = [];
    const apiTimes: number[] = [];
    const closeTimes: number[] = [];
    for (let i = 0; i < trials; i++) {
      const port = await freePort();
      const t0 = performance.now();
      const res = await server.api('POST', '/api/v1/mappings', {
        user_id: user.body.user_id, source_client_id: ids[0], target_client_id: ids[1], protocol: 'tcp',
        target_host: '127.0.0.1', target_port: 9, local_port: port,
      });
      const t1 = performance.now();
      if (res.status !== 201) throw new Error(`create failed: ${res.status} ${JSON.stringify(res.body)}`);
      // Busy-poll with a 1 ms pause: resolution is ~1 ms.
      const deadline = t1 + 5000;
      while (!(await canConnect(port))) {
        if (performance.now() > deadline) throw new Error(`port ${port} never opened`);
        await new Promise((r) => setTimeout(r, 1));
      }
      samples.push(performance.now() - t1);
      apiTimes.push(t1 - t0);
      const del = await server.api('DELETE', `/api/v1/mappings/${res.body.mapping_id}`);
      if (del.status !== 204) throw new Error(`delete failed: ${del.status}`);
      const t2 = performance.now();
      while (await canConnect(port)) {
        if (performance.now() > t2 + 5000) throw new Error(`port ${port} never closed`);
        await new Promise((r) => setTimeout(r, 1));
      }
      closeTimes.push(performance.now() - t2);
    }
    const f = (x: number): string => `${x.toFixed(1)} ms`;
    process.stdout.write(`activation (${extra.length ? 'JetStream' : 'standalone'} mode), ${trials} trials\n`);
    process.stdout.write(`  POST /mappings response → local_port accepting:  p50 ${f(median(samples))}   p99 ${f(percentile(samples, 99))}   max ${f(Math.max(...samples))}   (goal p99 < 100 ms)\n`);
    process.stdout.write(`  POST /mappings request → response (API + projection wait): p50 ${f(median(apiTimes))}   p99 ${f(percentile(apiTimes, 99))}\n`);
    process.stdout.write(`  DELETE /mappings response → local_port refusing:   p50 ${f(median(closeTimes))}   p99 ${f(percentile(closeTimes, 99))}   (goal < 100 ms)\n`);
    process.stdout.write(`  request → local_port accepting (end to end): p50 ${f(median(samples.map((s, i) => s + apiTimes[i]!)))}   p99 ${f(percentile(samples.map((s, i) => s + apiTimes[i]!), 99))}\n`);
  } finally {
    for (const a of agents) await a.stop();
    await server.proc.stop();
    await dir.remove();
    if (strArg('nats')) {
      const nc = await connect({ servers: strArg('nats')! });
      const jsm = await jetstreamManager(nc);
      // The event stream, its state stream (`<stream>_CFG`) and the prefix's KV buckets (nodes, routes).
      for await (const info of jsm.streams.list()) {
        const name = info.config.name;
        if (name.startsWith(stream) || name.startsWith(`KV_${stream.toLowerCase()}_`)) await jsm.streams.delete(name).catch(() => undefined);
      }
      await nc.close();
    }
    await database?.drop();
  }
}

await main();
