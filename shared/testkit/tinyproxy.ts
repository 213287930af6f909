import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../net/listen.js';

/** A real HTTP proxy (Debian's tinyproxy, installed by scripts/ensure-services.sh) on a loopback port of its own. */
export interface TestProxy {
  readonly port: number;
  readonly url: string;
  /** CONNECT requests the proxy logged so far ("host:port" targets): proof traffic went through it. */
  connects(): Promise<string[]>;
  stop(): Promise<void>;
}

const BIN = process.env.TUNNOX_TEST_TINYPROXY ?? 'tinyproxy';

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/**
 * Starts tinyproxy in the foreground with its own config in a temp dir: loopback only, CONNECT to
 * any port, every request logged. Stopped (and its dir removed) by stop().
 */
export async function startTinyproxy(): Promise<TestProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-tinyproxy-'));
  const port = await freePort();
  const log = join(dir, 'tinyproxy.log');
  await writeFile(
    join(dir, 'tinyproxy.conf'),
    [`Port ${port}`, 'Listen 127.0.0.1', 'Allow 127.0.0.1', 'Timeout 600', 'MaxClients 500', 'LogLevel Connect', `LogFile "${log}"`, `PidFile "${join(dir, 'tinyproxy.pid')}"`, ''].join('\n'),
  );
  const child: ChildProcess = spawn(BIN, ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const spawnError = new Promise<never>((_, reject) => child.once('error', (err) => reject(new Error(`cannot run ${BIN} (scripts/ensure-services.sh installs it): ${err.message}`))));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await Promise.race([reachable(port), spawnError]);
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`tinyproxy did not start on 127.0.0.1:${port}: ${stderr.slice(-500)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async connects() {
      const { readFile } = await import('node:fs/promises');
      const text = await readFile(log, 'utf8').catch(() => '');
      return [...text.matchAll(/Request \(file descriptor \d+\): CONNECT (\S+) HTTP/g)].map((m) => m[1]!);
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
