#!/usr/bin/env node
// Thin launcher: the CLI is TypeScript compiled to dist/ by `npm run build` (make setup).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'services', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write('tunnox: not built yet; run `make setup` (npm ci && npm run build) in ' + root + '\n');
  process.exit(1);
}
await import(entry);
