#!/usr/bin/env node
// Thin launcher: the CLI is TypeScript compiled to dist/ by `npm run build` (make setup).
import { existsSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'services', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write('tunnox: not built yet; run `make setup` (npm ci && npm run build) in ' + root + '\n');
  process.exit(1);
}
// Byte pumps allocate a fresh 64 KiB buffer per socket read. On a process with a real heap (API,
// projector, pools), that external-memory churn can lock V8 into back-to-back incremental marking
// cycles that cost 30-40% of tunnel throughput (bench/throughput, measured: 0.6x vs 1.0x of a bare
// relay, bimodal from run to run). Without incremental marking, the same churn is handled by
// scavenges; full collections of our small heap stay short. Set before anything allocates much.
setFlagsFromString('--no-incremental-marking');
try {
  await import(entry);
} catch (err) {
  // A missing dependency (node_modules not installed, or installed for another tree) or a partial
  // build: one line that says what to do, not a stack trace.
  const message = err instanceof Error ? err.message : String(err);
  const missing = err && typeof err === 'object' && 'code' in err && err.code === 'ERR_MODULE_NOT_FOUND';
  process.stderr.write(`tunnox: ${message}${missing ? `; run \`make setup\` (npm ci && npm run build) in ${root}` : ''}\n`);
  process.exit(1);
}
