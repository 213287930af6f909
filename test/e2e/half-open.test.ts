import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually, sleep, startServer, tempDir } from './harness.js';
import { acceptedOn, describeFds, fdCount, privateLoopback, rssBytes } from './procfs.js';

/**
 * Half-open peers against a real `tunnox server` (issue 7): 100 agents (real TCP control
 * connections that complete the handshake, in one child process: raw-agents.ts) are killed with
 * -9 mid-session, three times: the server's fds come back to baseline each time, and its RSS after
 * the third round to what it was after the second (see the comment at the rounds).
 */

const HERE = dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

t.test('100 agents killed with -9 mid-session: the edge gives back their fds and memory', async (t) => {
  const dir = await tempDir('tnx-halfopen');
  const host = privateLoopback();
  t.teardown(() => dir.remove());
  // Short heartbeats keep the 100 sessions chatty (a heartbeat each per second) while they live.
  const server = await startServer(
    // The raw agents (raw-agents.ts) speak plain TCP frames.
    ['--data-dir', join(dir.path, 'data'), '--control-host', host, '--allow-plaintext', '--anonymous-rate', '1000', '--heartbeat-interval', '1', '--heartbeat-timeout', '5'],
    `key-${randomBytes(12).toString('hex')}`,
    // Each login's scrypt hash takes 16 MiB on a libuv thread; with glibc's default of one malloc
    // arena per thread (up to 8 per core) those stay resident in whichever arena served them, so
    // RSS after a round depends on which threads did the hashing. Two arenas make it repeatable.
    { MALLOC_ARENA_MAX: '2' },
  );
  t.teardown(() => server.proc.stop());
  const pid = server.proc.child.pid!;
  await sleep(1_000);
  const fdBaseline = fdCount(pid);
  const atBaseline = describeFds(pid);

  /** 100 agents log in, talk for a while, and are killed with -9 together; returns the RSS with them. */
  const round = async (n: number): Promise<number> => {
    const agents = spawn(process.execPath, [join(HERE, 'raw-agents.js'), host, String(server.controlPort), '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => agents.kill('SIGKILL'));
    let out = '';
    agents.stdout.on('data', (c: Buffer) => (out += c.toString()));
    agents.stderr.on('data', (c: Buffer) => (out += c.toString()));
    await eventually(`round ${n}: 100 agents logged in`, async () => out.includes('ready 100'), 90_000).catch((err: unknown) => {
      throw new Error(`${String(err)}; raw agents said: ${out.slice(-2000)}`);
    });
    await eventually(`round ${n}: 100 sessions held by the server`, async () => acceptedOn(pid, [server.controlPort]).length === 100, 10_000);
    const online = await eventually(`round ${n}: 100 anonymous clients online through the API`, async () => {
      const r = (await server.api('GET', '/api/v1/clients?status=online&type=anonymous&limit=200')).body;
      return r.clients?.length === 100 ? r.clients : undefined;
    }, 30_000);
    t.equal(online.length, 100, `round ${n}: 100 online`);
    const loaded = { fds: fdCount(pid), rss: rssBytes(pid) };
    t.ok(loaded.fds >= fdBaseline + 100, `round ${n}: the sessions hold fds: ${fdBaseline} → ${loaded.fds}`);
    await sleep(2_000); // mid-session: heartbeats and config acknowledgements going back and forth

    agents.kill('SIGKILL');
    await new Promise((r) => agents.once('exit', r));
    await eventually(`round ${n}: every session gone from the control port`, async () => acceptedOn(pid, [server.controlPort]).length === 0, 15_000);
    await eventually(`round ${n}: server fds back to the baseline of ${fdBaseline}`, async () => fdCount(pid) <= fdBaseline, 30_000).catch((err: unknown) => {
      let ss = '';
      try {
        ss = execFileSync('ss', ['-tanp'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`:${server.controlPort} `)).join('\n');
      } catch {
        /* no ss */
      }
      throw new Error(`${String(err)}: ${fdCount(pid)} fds: ${describeFds(pid)}; at the baseline: ${atBaseline}; ss: ${ss}`);
    });
    t.pass(`round ${n}: fds back to ${fdBaseline}`);
    await eventually(`round ${n}: all 100 offline through the API`, async () => {
      const r = (await server.api('GET', '/api/v1/clients?status=online&type=anonymous&limit=200')).body;
      return r.clients?.length === 0;
    }, 30_000);
    return loaded.rss;
  };

  // The first two rounds warm the process up: each login costs an scrypt hash, whose 16 MiB buffers
  // glibc keeps in its arenas afterwards, and V8 grows its heap. The baseline is what is resident
  // after that; a third, identical round must come back to it. A leak of the sessions' buffers,
  // timers or sockets would grow with every round (100 sessions each).
  const cold = rssBytes(pid);
  await round(1);
  await round(2);
  await sleep(2_000);
  const warm = rssBytes(pid);
  const peak = await round(3);
  await sleep(2_000);
  const after = rssBytes(pid);
  // The allocator may keep up to the scrypt working set resident after any round: 16 MiB per hash
  // on each of libuv's 4 threads. Beyond that, growth is the sessions' own (100 per round).
  const slack = 4 * 16 * MiB;
  t.ok(
    after <= warm + slack,
    `RSS: ${(cold / MiB).toFixed(1)} MiB at start, ${(warm / MiB).toFixed(1)} after two rounds, ${(peak / MiB).toFixed(1)} with 100 more sessions, ${(after / MiB).toFixed(1)} after they were killed (bound: warm + 64 MiB, the scrypt working set)`,
  );
});
