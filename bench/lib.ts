import { fork, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Server } from 'node:net';

export const MiB = 1024 * 1024;

/** `--name N` from the command line, or `def`. */
export function numArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

/** `--name VALUE` from the command line, or undefined. */
export function strArg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** A sink that counts bytes per connection and reports when `expect` bytes have arrived. */
export async function startSink(): Promise<{ port: number; next(expect: number): Promise<number>; close(): Promise<void> }> {
  let waiter: { expect: number; resolve: (t: number) => void } | undefined;
  const server: Server = createServer((socket) => {
    let n = 0;
    socket.on('data', (c: Buffer) => {
      n += c.length;
      if (waiter && n >= waiter.expect) {
        const w = waiter;
        waiter = undefined;
        w.resolve(performance.now());
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return {
    port: addr && typeof addr === 'object' ? addr.port : 0,
    next: (expect) => new Promise((resolve) => (waiter = { expect, resolve })),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Sends `bytes` over one connection to `port` as fast as backpressure allows; returns MB/s measured at the sink. */
export async function measureTransfer(port: number, sink: Awaited<ReturnType<typeof startSink>>, bytes: number, host = '127.0.0.1'): Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const done = sink.next(bytes);
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    const s = connect({ port, host });
    s.setNoDelay(true);
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      resolve();
    };
    s.once('connect', pump);
    s.once('error', reject);
    void done.then(() => s.destroy());
  });
  const end = await done;
  return bytes / MiB / ((end - start) / 1000);
}

/**
 * A helper process (relay hop, echo service, connection holder) forked from `script`; it reports
 * its listening port over IPC as its first message. `execArgv`: node flags (e.g. --inspect).
 */
export interface PortProcess {
  port: number;
  child: ChildProcess;
  /** Its stderr lines so far. */
  lines: string[];
  stop(): void;
}

export async function startPortProcess(script: string, args: string[] = [], execArgv: string[] = []): Promise<PortProcess> {
  const child = fork(script, args, { stdio: ['ignore', 'inherit', 'pipe', 'ipc'], execArgv });
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    for (const line of chunk.split('\n')) {
      if (!line) continue;
      stderr.push(line);
      // The inspector's banner is expected (and read through `lines`); anything else is shown.
      if (!/^(Debugger (listening on|attached|ending on)|For help, see:|Waiting for the debugger)/.test(line)) process.stderr.write(`${line}\n`);
    }
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve(Number(m)));
    child.once('exit', (code) => reject(new Error(`${script} exited ${code}`)));
  });
  return { port, child, lines: stderr, stop: () => void child.kill('SIGTERM') };
}

/** A relay hop in its own process (like an edge or an agent would be): listen, pipe to the next hop. */
export function startRelayProcess(relayScript: string, targetPort: number, args: string[] = [], execArgv: string[] = []): Promise<PortProcess> {
  return startPortProcess(relayScript, [...args, String(targetPort)], execArgv);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

/** A bad command line or an unfit machine: printed as one line, without a stack. */
export class UsageError extends Error {}

/** Runs a bench's main: a UsageError is one line on stderr, anything else its stack; exit code 1 either way. */
export async function runBench(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    process.stderr.write(`${err instanceof UsageError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  }
}
