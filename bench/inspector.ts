// A minimal Chrome DevTools Protocol client for the benchmarks: a process started with
// `--inspect=127.0.0.1:0` prints "Debugger listening on ws://…" on stderr; over that socket we can
// force a full GC and read process.memoryUsage() from outside, without any code in the measured
// process that a production build would not have. Only used by bench/memory (and for profiling:
// heap snapshots, CPU profiles).
import { createWriteStream } from 'node:fs';
import WebSocket from 'ws';

export interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

export interface Inspector {
  /** Two full, compacting collections (the second picks up what finalizers of the first let go). */
  gc(): Promise<void>;
  memoryUsage(): Promise<MemoryUsage>;
  /** Writes a heap snapshot (load it in Chrome DevTools → Memory). */
  heapSnapshot(path: string): Promise<void>;
  startCpuProfile(): Promise<void>;
  /** Stops the profile started by startCpuProfile and writes it as a .cpuprofile file. */
  stopCpuProfile(path: string): Promise<void>;
  close(): void;
}

/** The inspector URL from a process's stderr lines ("Debugger listening on ws://127.0.0.1:port/uuid"). */
export function inspectorUrl(lines: readonly string[]): string | undefined {
  for (const line of lines) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

export async function connectInspector(url: string): Promise<Inspector> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve(r: unknown): void; reject(e: Error): void }>();
  const listeners = new Map<string, (params: Record<string, unknown>) => void>();
  ws.on('message', (data: WebSocket.RawData) => {
    const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown> };
    if (msg.id !== undefined) {
      const w = waiting.get(msg.id);
      waiting.delete(msg.id);
      if (msg.error) w?.reject(new Error(`inspector: ${msg.error.message}`));
      else w?.resolve(msg.result);
    } else if (msg.method) listeners.get(msg.method)?.(msg.params ?? {});
  });
  ws.on('close', () => {
    for (const w of waiting.values()) w.reject(new Error('inspector connection closed'));
    waiting.clear();
  });
  const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve: resolve as (r: unknown) => void, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });

  return {
    async gc() {
      await call('HeapProfiler.collectGarbage');
      await call('HeapProfiler.collectGarbage');
    },
    async memoryUsage() {
      const r = await call<{ result: { value?: string }; exceptionDetails?: { text: string } }>('Runtime.evaluate', {
        expression: 'JSON.stringify(process.memoryUsage())',
        returnByValue: true,
      });
      if (r.exceptionDetails || typeof r.result.value !== 'string') throw new Error(`inspector: process.memoryUsage() failed: ${r.exceptionDetails?.text ?? 'no value'}`);
      return JSON.parse(r.result.value) as MemoryUsage;
    },
    async heapSnapshot(path) {
      const out = createWriteStream(path);
      listeners.set('HeapProfiler.addHeapSnapshotChunk', (p) => out.write(String(p.chunk)));
      await call('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
      listeners.delete('HeapProfiler.addHeapSnapshotChunk');
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    },
    async startCpuProfile() {
      await call('Profiler.enable');
      await call('Profiler.start');
    },
    async stopCpuProfile(path) {
      const { profile } = await call<{ profile: unknown }>('Profiler.stop');
      const out = createWriteStream(path);
      await new Promise<void>((resolve, reject) => out.end(JSON.stringify(profile), (err?: Error | null) => (err ? reject(err) : resolve())));
    },
    close: () => ws.close(),
  };
}
