import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../../shared/net/listen.js';
import { uniqueName } from '../../shared/testkit/pg.js';
import { ROOT } from './harness.js';

// The README's "Run a cluster" is this script: it must keep working as written.
t.test('scripts/cluster-demo.sh --check: a cluster of role processes and tunnels across its edges', async (t) => {
  const env = {
    ...process.env,
    DEMO_NAME: uniqueName('tnx_demo'),
    DEMO_API_PORT: '0',
    DEMO_CONTROL_PORT: '0',
    DEMO_BRIDGE_PORT: '0',
    DEMO_LOCAL_PORT: String(await freePort()),
  };
  const child = spawn('bash', [join(ROOT, 'scripts', 'cluster-demo.sh'), '--check'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), 150_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  t.equal(code, 0, `the script succeeds\n${out.slice(-3000)}`);
  t.equal(out.match(/hello from the service behind the target agent/g)?.length, 2, 'both tunnels answered (client-to-client and public through edge 3)');
  t.match(out, /node-\d+ +control 127\.0\.0\.3:\d+/, 'an edge listens on 127.0.0.3');
});
