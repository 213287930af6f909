// Single-stream bulk throughput through a public TCP mapping on one edge, per agent transport
// (tcp, tls, ws, wss: how the target agent's tunnel connection reaches the edge), against
// baselines measured in the same run: a direct loopback transfer, a minimal two-hop Node pipe
// relay (two processes, like edge + agent) and `ssh -R` (a private loopback sshd: visitor ->
// sshd -> encrypted -> ssh client -> service, also two processes). Every path is measured in turn
// within each round, so drift on a shared machine hits all alike. Prints MB/s and ratios; repeats
// the comparison (without ssh) with iperf3 as the load generator when it is installed.
// Usage: node dist/bench/throughput.js [--transport tcp,tls,ws,wss] [--mib 1024] [--runs 5]
//        [--iperf-runs 3] [--iperf-seconds 4] [--no-iperf3] [--no-ssh]
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect, eventually, freePort, tempDir } from '../test/e2e/harness.js';
import { measureTransfer, median, MiB, numArg, runBench, startRelayProcess, startSink, type PortProcess } from './lib.js';
import { SSHD, startSshReverse, type SshReverse } from './ssh.js';
import { startBenchServer, transportsArg, type Agent, type BenchServer, type Transport } from './tunnox.js';

const bytes = numArg('mib', 1024) * MiB;
const runs = numArg('runs', 5);
const relayScript = join(fileURLToPath(new URL('.', import.meta.url)), 'relay.js');

interface Path {
  label: string;
  port: number;
  xs: number[];
}

function report(label: string, xs: number[]): number {
  const m = median(xs);
  process.stdout.write(`${label.padEnd(50)} ${m.toFixed(0).padStart(7)} MB/s   (runs: ${xs.map((x) => x.toFixed(0)).join(', ')})\n`);
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

const tunnoxLabel = (t: Transport): string => `tunnox public mapping, agent over ${t}`;

/** `ssh -R` when sshd and ssh are here (and not --no-ssh); says why not otherwise. */
async function sshBaseline(targetPort: number): Promise<SshReverse | undefined> {
  const skipped = (why: string): undefined => {
    process.stdout.write(`ssh -R baseline skipped: ${why}\n`);
    return undefined;
  };
  if (process.argv.includes('--no-ssh')) return skipped('--no-ssh');
  if (!existsSync(SSHD)) return skipped(`no ${SSHD} (apt-get install openssh-server; the bench starts its own sshd on a loopback port, never the system service)`);
  if (!hasCommand('ssh')) return skipped('no ssh client (apt-get install openssh-client)');
  return startSshReverse(targetPort).catch((err: unknown) => skipped(String(err)));
}

async function main(): Promise<void> {
  const transports = transportsArg();
  process.stdout.write(`throughput: one TCP stream, ${bytes / MiB} MiB per run, median of ${runs} runs, Node load generator, transports: ${transports.join(', ')}\n`);
  process.stdout.write('(all paths are measured in turn within each round, so drift on a shared machine hits all alike)\n');
  const sink = await startSink();
  const relays: PortProcess[] = [];
  const dir = await tempDir('tnx-bench');
  let bench: BenchServer | undefined;
  let ssh: SshReverse | undefined;
  try {
    const hop2 = await startRelayProcess(relayScript, sink.port);
    relays.push(hop2);
    const hop1 = await startRelayProcess(relayScript, hop2.port);
    relays.push(hop1);
    ssh = await sshBaseline(sink.port);

    bench = await startBenchServer({ dir: dir.path, transports });
    const agents = new Map<Transport, Agent>();
    const paths: Path[] = [
      { label: 'direct loopback', port: sink.port, xs: [] },
      { label: 'two-hop Node pipe relay', port: hop1.port, xs: [] },
      ...(ssh ? [{ label: 'ssh -R (OpenSSH, encrypted)', port: ssh.port, xs: [] }] : []),
    ];
    for (const t of transports) {
      const agent = await bench.agent(`throughput-${t}`, t);
      agents.set(t, agent);
      paths.push({ label: tunnoxLabel(t), port: await bench.publicMapping(agent, sink.port), xs: [] });
    }

    for (const p of paths) await measureTransfer(p.port, sink, 64 * MiB); // warm-up
    for (let i = 0; i < runs; i++) for (const p of paths) p.xs.push(await measureTransfer(p.port, sink, bytes));
    const m = new Map(paths.map((p) => [p.label, report(p.label, p.xs)]));
    const direct = m.get('direct loopback')!;
    const relay = m.get('two-hop Node pipe relay')!;
    const sshM = m.get('ssh -R (OpenSSH, encrypted)');
    const plain = m.get(tunnoxLabel('tcp'));
    const tls = m.get(tunnoxLabel('tls'));

    process.stdout.write('\nratios (same run):\n');
    process.stdout.write(`  relay / direct     ${(relay / direct).toFixed(2)}x\n`);
    for (const t of transports) {
      const v = m.get(tunnoxLabel(t))!;
      const parts = [`/ relay ${(v / relay).toFixed(2)}x`, `/ direct ${(v / direct).toFixed(2)}x`];
      if (sshM) parts.push(`/ ssh -R ${(v / sshM).toFixed(2)}x`);
      if (plain && t !== 'tcp') parts.push(`/ tunnox tcp ${(v / plain).toFixed(2)}x`);
      process.stdout.write(`  tunnox ${t.padEnd(4)} ${parts.join('   ')}\n`);
    }
    if (plain) process.stdout.write(`  goal: tunnox tcp / two-hop relay >= 0.85x: ${(plain / relay).toFixed(2)}x\n`);
    if (tls && plain) process.stdout.write(`  goal: tunnox tls / tunnox tcp >= 0.6x: ${(tls / plain).toFixed(2)}x\n`);
    if (tls && sshM) process.stdout.write(`  goal: tunnox tls / ssh -R >= 1.0x: ${(tls / sshM).toFixed(2)}x\n`);
    if (tls && !sshM) process.stdout.write('  goal: tunnox tls / ssh -R >= 1.0x: not measured (no ssh -R baseline, see above)\n');

    if (hasCommand('iperf3') && !process.argv.includes('--no-iperf3')) {
      await iperfComparison(bench, agents, relays);
    } else {
      process.stdout.write(hasCommand('iperf3') ? '\niperf3 skipped (--no-iperf3)\n' : '\niperf3 not installed (apt-get install iperf3): Node load generator only\n');
    }
  } finally {
    await ssh?.stop();
    await bench?.stop();
    for (const r of relays) r.stop();
    await sink.close();
    await dir.remove();
  }
}

/** The same comparison with iperf3 as the load generator (its own server as the target). */
async function iperfComparison(bench: BenchServer, agents: Map<Transport, Agent>, relays: PortProcess[]): Promise<void> {
  const iperfPort = await freePort();
  const iperfServer = spawn('iperf3', ['-s', '-p', String(iperfPort)], { stdio: 'ignore' });
  try {
    await eventually('iperf3 server', () => canConnect(iperfPort));
    const r2 = await startRelayProcess(relayScript, iperfPort);
    relays.push(r2);
    const r1 = await startRelayProcess(relayScript, r2.port);
    relays.push(r1);
    const ipaths = [
      { label: 'direct loopback', port: iperfPort },
      { label: 'two-hop Node pipe relay', port: r1.port },
    ];
    for (const [t, agent] of agents) ipaths.push({ label: tunnoxLabel(t), port: await bench.publicMapping(agent, iperfPort) });
    // iperf3 -s serves one test at a time; let it finish with the probe connections first.
    await new Promise((r) => setTimeout(r, 1000));
    const seconds = numArg('iperf-seconds', 4);
    const iruns = numArg('iperf-runs', 3);
    process.stdout.write(`\niperf3, ${seconds} s per run, median of ${iruns} runs (upload = towards the service, download = -R), paths in turn per round\n`);
    const medians = new Map<string, number>();
    for (const reverse of [false, true]) {
      const xs = ipaths.map(() => [] as number[]);
      for (let i = 0; i < iruns; i++) for (const [k, p] of ipaths.entries()) xs[k]!.push(await iperf3(p.port, seconds, reverse));
      for (const [k, p] of ipaths.entries()) medians.set(`${p.label}/${reverse}`, report(`${p.label} (${reverse ? 'download' : 'upload'})`, xs[k]!));
    }
    for (const reverse of [false, true]) {
      const dir = reverse ? 'download' : 'upload';
      const relay = medians.get(`two-hop Node pipe relay/${reverse}`)!;
      const plain = medians.get(`${tunnoxLabel('tcp')}/${reverse}`);
      const parts = [...agents.keys()].map((t) => {
        const v = medians.get(`${tunnoxLabel(t)}/${reverse}`)!;
        return `${t} / relay ${(v / relay).toFixed(2)}x${plain && t !== 'tcp' ? ` (/ tcp ${(v / plain).toFixed(2)}x)` : ''}`;
      });
      process.stdout.write(`ratios, iperf3 ${dir}: ${parts.join(', ')}\n`);
    }
  } finally {
    iperfServer.kill('SIGTERM');
  }
}

await runBench(main);
