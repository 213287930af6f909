import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { freePort, listen } from '../../shared/net/listen.js';
import { uniqueName } from '../../shared/testkit/pg.js';
import { ROOT } from './harness.js';

/** A port P with P and P+1 free on 127.0.0.1 and P+2 free on 127.0.0.1-3: the demo's metrics ports. */
async function freeMetricsBase(): Promise<number> {
  const bindable = async (host: string, port: number): Promise<boolean> => {
    const s = createServer();
    try {
      await listen(s, { host, port });
      return true;
    } catch {
      return false;
    } finally {
      s.close();
    }
  };
  for (;;) {
    // Below Linux's ephemeral range (32768+): no outgoing connection takes P+1 or P+2 meanwhile.
    const p = 12000 + Math.floor(Math.random() * 8000);
    const checks = [bindable('127.0.0.1', p), bindable('127.0.0.1', p + 1), ...['127.0.0.1', '127.0.0.2', '127.0.0.3'].map((h) => bindable(h, p + 2))];
    if ((await Promise.all(checks)).every(Boolean)) return p;
  }
}

// The README's "Run a cluster" is this script: it must keep working as written.
t.test('scripts/cluster-demo.sh --check: a cluster of role processes and tunnels across its edges', async (t) => {
  const env = {
    ...process.env,
    DEMO_NAME: uniqueName('tnx_demo'),
    DEMO_API_PORT: '0',
    DEMO_CONTROL_PORT: '0',
    DEMO_BRIDGE_PORT: '0',
    DEMO_LOCAL_PORT: String(await freePort()),
    DEMO_METRICS_PORT: String(await freeMetricsBase()),
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
  // Edge 1 holds the source agent, edge 2 the target (both tunnels reach it over the bridge), edge 3 took the public visitor.
  t.match(out, /edge 1 +http:\/\/127\.0\.0\.1:\d+\/metrics\n +tunnox_edge_tunnels_opened_total\{kind="client"\} 1\n/, 'edge 1 counted the client-to-client tunnel');
  t.match(out, /edge 2 +http:\/\/127\.0\.0\.2:\d+\/metrics\n +tunnox_edge_tunnels_opened_total\{kind="bridge"\} 2\n/, 'edge 2 counted both tunnels, bridged to it');
  t.match(out, /edge 3 +http:\/\/127\.0\.0\.3:\d+\/metrics\n +tunnox_edge_tunnels_opened_total\{kind="public"\} 1\n/, 'edge 3 counted the public visitor');
});
