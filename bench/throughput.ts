// Single-stream bulk throughput through a public TCP mapping on one edge, against baselines measured
// in the same run: a direct loopback transfer and a minimal two-hop Node pipe relay (two processes,
// like edge + agent). Prints MB/s and ratios; repeats the comparison with iperf3 when it is installed.
// Usage: node dist/bench/throughput.js [--mib 1024] [--runs 5] [--iperf-seconds 4] [--no-iperf3]
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect, eventually, freePort, spawnTunnox, startServer, tempDir } from '../test/e2e/harness.js';
import { measureTransfer, median, MiB, numArg, startRelayProcess, startSink } from './lib.js';
import { SSHD, startSshReverse, type SshReverse } from './ssh.js';

const bytes = numArg('mib', 1024) * MiB;
const runs = numArg('runs', 5);
const relayScript = join(fileURLToPath(new URL('.', import.meta.url)), 'relay.js');

function report(label: string, xs: number[]): number {
  const m = median(xs);
  process.stdout.write(`${label.padEnd(34)} ${m.toFixed(0).padStart(7)} MB/s   (runs: ${xs.map((x) => x.toFixed(0)).join(', ')})\n`);
  return m;
}

const execFileAsync = promisify(execFile);

/** iperf3 client through `port` for `seconds`; MB/s received (reverse = server sends). */
async function iperf3(port: number, seconds: number, reverse: boolean): Promise<number> {
  const args = ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])];
  let result: { error?: string; end?: { sum_received?: { bits_per_second: number } } } = {};
  // iperf3 -s runs one test at a time: the previous test's connections may still be closing.
  for (let attempt = 0; attempt < 20; attempt++) {
    const { stdout } = await execFileAsync('iperf3', args, { timeout: (seconds + 20) * 1000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '{}' }));
    result = JSON.parse(stdout) as typeof result;
    if (!result.error?.includes('busy')) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const bps = result.end?.sum_received?.bits_per_second;
  if (bps === undefined) throw new Error(`iperf3 through port ${port}: ${result.error ?? 'no result'}`);
  return bps / 8 / MiB;
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  process.stdout.write(`throughput: one TCP stream, ${bytes / MiB} MiB per run, median of ${runs} runs, Node load generator\n`);
  process.stdout.write('(the three paths are measured in turn within each round, so drift on a shared machine hits all alike)\n');
  const sink = await startSink();
  const hop2 = await startRelayProcess(relayScript, sink.port);
  const hop1 = await startRelayProcess(relayScript, hop2.port);

  const dir = await tempDir('tnx-bench');
  const server = await startServer(['--data-dir', join(dir.path, 'server')], 'bench-admin-key-0123456789abcdef');
  const agentProcs: ReturnType<typeof spawnTunnox>[] = [];
  const cleanups: (() => void)[] = [];
  try {
    const user = await server.api('POST', '/api/v1/users', { username: 'bench', email: 'bench@example.com' });
    const client = await server.api('POST', '/api/v1/clients', { user_id: user.body.user_id, client_name: 'bench-target' });
    const agent = spawnTunnox([
      'client', '--server', `127.0.0.1:${server.controlPort}`, '--client-id', String(client.body.client_id),
      '--auth-code', client.body.auth_code, '--credentials', join(dir.path, 'creds.json'), '--log-level', 'warn',
    ]);
    agentProcs.push(agent);
    await eventually('agent online', async () => (await server.api('GET', `/api/v1/clients/${client.body.client_id}`)).body.status === 'online');
    const mapping = await server.api('POST', '/api/v1/mappings', {
      user_id: user.body.user_id, target_client_id: client.body.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: sink.port,
    });
    const port = Number(mapping.body.public_port);
    await eventually('public port open', () => canConnect(port));

    const paths = [
      { label: 'direct loopback', port: sink.port, xs: [] as number[] },
      { label: 'two-hop Node pipe relay', port: hop1.port, xs: [] as number[] },
      { label: 'tunnox public TCP mapping', port, xs: [] as number[] },
    ];
    for (const p of paths) await measureTransfer(p.port, sink, 64 * MiB); // warm-up
    for (let i = 0; i < runs; i++) for (const p of paths) p.xs.push(await measureTransfer(p.port, sink, bytes));
    const [direct, relay, tunnox] = paths.map((p) => report(p.label, p.xs)) as [number, number, number];

    if (hasCommand('iperf3') && !process.argv.includes('--no-iperf3')) {
      // The same comparison with iperf3 as the load generator (its own server as the target).
      const iperfPort = await freePort();
      const iperfServer = spawn('iperf3', ['-s', '-p', String(iperfPort)], { stdio: 'ignore' });
      try {
        await eventually('iperf3 server', () => canConnect(iperfPort));
        const r2 = await startRelayProcess(relayScript, iperfPort);
        cleanups.push(() => r2.stop());
        const r1 = await startRelayProcess(relayScript, r2.port);
        cleanups.push(() => r1.stop());
        const im = await server.api('POST', '/api/v1/mappings', {
          user_id: user.body.user_id, target_client_id: client.body.client_id, protocol: 'tcp', target_host: '127.0.0.1', target_port: iperfPort,
        });
        const iport = Number(im.body.public_port);
        await eventually('iperf3 mapping open', () => canConnect(iport));
        // iperf3 -s serves one test at a time; let it finish with the probe connections first.
        await new Promise((r) => setTimeout(r, 1000));
        const seconds = numArg('iperf-seconds', 4);
        process.stdout.write(`\niperf3, ${seconds} s per run, median of ${runs} runs (upload = towards the service, download = -R)\n`);
        const ipaths = [
          { label: 'direct loopback', port: iperfPort },
          { label: 'two-hop Node pipe relay', port: r1.port },
          { label: 'tunnox public TCP mapping', port: iport },
        ];
        const medians: Record<string, number> = {};
        for (const reverse of [false, true]) {
          const xs = ipaths.map(() => [] as number[]);
          for (let i = 0; i < runs; i++) for (const [k, p] of ipaths.entries()) xs[k]!.push(await iperf3(p.port, seconds, reverse));
          for (const [k, p] of ipaths.entries()) medians[`${p.label}/${reverse}`] = report(`${p.label} (${reverse ? 'download' : 'upload'})`, xs[k]!);
        }
        for (const reverse of [false, true]) {
          const ratio = medians[`tunnox public TCP mapping/${reverse}`]! / medians[`two-hop Node pipe relay/${reverse}`]!;
          process.stdout.write(`ratio tunnox / two-hop relay (iperf3 ${reverse ? 'download' : 'upload'}) : ${ratio.toFixed(2)}x\n`);
        }
      } finally {
        iperfServer.kill('SIGTERM');
      }
    } else {
      process.stdout.write(hasCommand('iperf3') ? 'iperf3 skipped (--no-iperf3)\n' : 'iperf3 not installed: Node load generator only\n');
    }

    let ssh: SshReverse | undefined;
    if (existsSync(SSHD) && hasCommand('ssh')) {
      ssh = await startSshReverse(sink.port).catch((err: unknown) => {
        process.stdout.write(`ssh -R                             skipped (${String(err)})\n`);
        return undefined;
      });
    } else {
      process.stdout.write('ssh -R                             skipped (no sshd on this machine)\n');
    }
    if (ssh) {
      try {
        process.stdout.write('\nssh -R (OpenSSH, encrypted) against tunnox, Node load generator, in turn per round\n');
        await measureTransfer(ssh.port, sink, 64 * MiB);
        const xs: number[] = [];
        const ts: number[] = [];
        for (let i = 0; i < runs; i++) {
          xs.push(await measureTransfer(ssh.port, sink, bytes));
          ts.push(await measureTransfer(port, sink, bytes));
        }
        const sshMedian = report('ssh -R', xs);
        const tMedian = report('tunnox public TCP mapping', ts);
        process.stdout.write(`ratio tunnox / ssh -R        : ${(tMedian / sshMedian).toFixed(2)}x\n`);
      } finally {
        await ssh.stop();
      }
    }
    process.stdout.write(`\nratio tunnox / two-hop relay : ${(tunnox / relay).toFixed(2)}x   (goal >= 0.85x)\n`);
    process.stdout.write(`ratio tunnox / direct        : ${(tunnox / direct).toFixed(2)}x\n`);
    process.stdout.write(`ratio relay  / direct        : ${(relay / direct).toFixed(2)}x\n`);
  } finally {
    for (const c of cleanups) c();
    for (const p of agentProcs) await p.stop();
    await server.proc.stop();
    hop1.stop();
    hop2.stop();
    await sink.close();
    await dir.remove();
  }
}

await main();
