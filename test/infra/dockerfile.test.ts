import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, relative } from 'node:path';
import { promisify } from 'node:util';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { ROOT, deleteStreams, eventually, freePort, spawnTunnox } from '../e2e/harness.js';

// Docker is not available where the suite runs, so the Dockerfile is checked by reading it: its
// stages, the user, the healthcheck and the entry point, and that the runtime stage copies what
// the program loads. Then the runtime stage's COPY instructions are replayed into a folder (from a
// build with the image's tsconfig) and a real projector runs from there, probed by the image's
// HEALTHCHECK command.

const run = promisify(execFile);

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

/** Dockerfile → stages (comments, line continuations and parser directives handled). */
function parseDockerfile(text: string): { args: Instruction[]; stages: Stage[] } {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (current !== '' && line.startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push(current + line);
    current = '';
  }
  const args: Instruction[] = [];
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    const ins = { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (ins.op === 'FROM') {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      stages.push({ from: f[1]!, name: f[2] ?? String(stages.length), instructions: [] });
    } else if (stages.length === 0) {
      args.push(ins);
    } else {
      stages[stages.length - 1]!.instructions.push(ins);
    }
  }
  return { args, stages };
}

function only(stage: Stage, op: string): Instruction[] {
  return stage.instructions.filter((i) => i.op === op);
}

/** The exec (JSON) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; the shell form is not used here. */
function execForm(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not an exec form: ${args}`);
  return parsed;
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}
function copies(stage: Stage): Copy[] {
  return only(stage, 'COPY').map((c) => {
    const words = c.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const paths = words.filter((w) => !w.startsWith('--'));
    return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1]! };
  });
}

function workdir(stage: Stage): string {
  const w = only(stage, 'WORKDIR');
  return w.length ? w[w.length - 1]!.args : '/';
}

/** .dockerignore patterns as the simple globs it uses here: `name`, `dir/name`, `**\/*.ext`. */
function ignored(patterns: string[], path: string): boolean {
  const rel = normalize(path).replace(/^\.\//, '').replace(/\/$/, '');
  return patterns.some((p) => {
    const re = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(.*/)?').replace(/\*/g, '[^/]*')}(/.*)?$`);
    return re.test(rel);
  });
}

/** Relative modules a compiled ES module imports, statically or with import('./x.js'). */
async function importClosure(entry: string): Promise<Set<string>> {
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = await readFile(file, 'utf8');
    for (const m of src.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) queue.push(join(dirname(file), m[1]!));
  }
  return seen;
}

const dockerfile = parseDockerfile(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
const dockerignore = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { type?: string; bin?: Record<string, string> };
const stages = dockerfile.stages;

/** One build with the image's tsconfig (the build stage's `tsc -p tsconfig.build.json`), shared by the tests below. */
const buildDir = await mkdtemp(join(tmpdir(), 'tnx-image-build-'));
t.teardown(() => rm(buildDir, { recursive: true, force: true }));
const built = run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(buildDir, 'dist')], { cwd: ROOT });
built.catch(() => undefined); // awaited (and reported) by the tests that need it
const runtime = stages[stages.length - 1]!;
const byName = new Map(stages.map((s) => [s.name, s]));

t.test('stages: build, production dependencies, runtime', async (t) => {
  t.ok(stages.length >= 3, `multi-stage (${stages.map((s) => s.name).join(', ')})`);
  t.equal(runtime.name, 'runtime', 'the last stage is the runtime');
  const build = byName.get('build')!;
  t.ok(only(build, 'RUN').some((r) => /\bnpm ci\b/.test(r.args) && !/--omit=dev/.test(r.args)), 'build: npm ci with dev dependencies (the compiler)');
  t.ok(only(build, 'RUN').some((r) => /tsc -p tsconfig\.build\.json/.test(r.args)), 'build: compiles with tsconfig.build.json');
  const deps = byName.get('deps')!;
  t.ok(only(deps, 'RUN').some((r) => /\bnpm ci\b.*--omit=dev/.test(r.args) && !/--ignore-scripts/.test(r.args)), 'deps: npm ci --omit=dev, with install scripts (embedded PostgreSQL restores its symlinks)');
  t.notOk(only(runtime, 'RUN').some((r) => /\bnpm\b|\btsc\b/.test(r.args)), 'runtime: no npm or compiler run');
  const base = dockerfile.args.find((a) => a.args.startsWith('NODE_IMAGE='))?.args.split('=')[1];
  t.match(base, /^node:(2[0-9])-/, 'one Node base image for every stage, a supported major');
  t.ok(stages.every((s) => s.from === '${NODE_IMAGE}'), 'every stage starts from it');
  t.ok(Number(/node:(\d+)/.exec(base!)![1]) >= 20, 'Node 20 or newer (package.json engines)');
});

t.test('runtime: non-root user, healthcheck, entry point, volume', async (t) => {
  const users = only(runtime, 'USER');
  t.equal(users.length, 1, 'one USER');
  const user = users[0]!.args.split(':')[0]!;
  t.not(user, 'root', 'not root');
  t.not(user, '0', 'not uid 0');
  t.match(user, /^[1-9]\d*$/, 'a numeric uid (Kubernetes runAsNonRoot can check it)');
  const made = only(runtime, 'RUN').map((r) => r.args).join(' ');
  t.match(made, new RegExp(`useradd .*--uid ${user}\\b`), 'the user is created with that uid');
  const after = runtime.instructions.slice(runtime.instructions.findIndex((i) => i.op === 'USER'));
  t.notOk(after.some((i) => i.op === 'RUN'), 'nothing runs as root after USER');

  const hc = only(runtime, 'HEALTHCHECK');
  t.equal(hc.length, 1, 'a HEALTHCHECK');
  const hcCmd = /CMD\s+(\[.*\])$/.exec(hc[0]!.args)?.[1];
  t.ok(hcCmd, 'HEALTHCHECK ... CMD [exec form]');
  const probe = execForm(hcCmd!);
  t.same(probe.slice(0, 2), ['node', 'bin/healthcheck.js'], 'it runs bin/healthcheck.js');
  t.ok(existsSync(join(ROOT, 'bin', 'healthcheck.js')), 'which exists');
  t.match(hc[0]!.args, /--timeout=\d+s/, 'with a timeout');

  const entry = execForm(only(runtime, 'ENTRYPOINT')[0]!.args);
  t.same(entry, ['node', 'bin/tunnox.js'], 'ENTRYPOINT node bin/tunnox.js');
  t.equal(pkg.bin?.tunnox, 'bin/tunnox.js', 'the same file as package.json bin');
  const cmd = execForm(only(runtime, 'CMD')[0]!.args);
  t.equal(cmd[0], 'server', 'the default command is tunnox server');
  const volumes = only(runtime, 'VOLUME').flatMap((v) => execForm(v.args));
  t.same(volumes, ['/var/lib/tunnox'], 'one volume');
  const env = only(runtime, 'ENV').map((e) => e.args).join(' ');
  t.match(env, /TUNNOX_DATA_DIR=\/var\/lib\/tunnox\/\S+/, 'the data dir (embedded PostgreSQL, admin key) is on the volume');
  t.match(made, /install -d -o 10001 -g 10001 -m 0700 \/var\/lib\/tunnox/, 'the volume belongs to the user, private');
  t.equal(workdir(runtime), '/opt/tunnox', 'the program lives in /opt/tunnox');
});

t.test('the runtime stage copies what the program loads', async (t) => {
  const wd = workdir(runtime);
  const dests = new Map<string, Copy>();
  for (const c of copies(runtime)) for (const s of c.sources) dests.set(normalize(join(wd, c.dest, c.dest.endsWith('/') || c.sources.length > 1 ? s.split('/').pop()! : '')), c);
  const copied = (path: string): boolean => [...dests.keys()].some((d) => path === d || path.startsWith(d + '/'));

  // From the build context: present in the repository and not excluded by .dockerignore.
  for (const stage of stages) {
    for (const c of copies(stage).filter((c) => !c.from)) {
      for (const s of c.sources) {
        t.ok(existsSync(join(ROOT, s)), `${stage.name}: COPY ${s} exists in the repository`);
        t.notOk(ignored(dockerignore, s), `${stage.name}: ${s} is not excluded by .dockerignore`);
      }
    }
  }
  // From other stages: an earlier stage, and a path that stage produces.
  const build = byName.get('build')!;
  const buildWd = workdir(build);
  const outDir = JSON.parse((await readFile(join(ROOT, 'tsconfig.json'), 'utf8'))).compilerOptions.outDir as string;
  for (const c of copies(runtime).filter((c) => c.from)) {
    t.ok(stages.indexOf(byName.get(c.from!)!) < stages.indexOf(runtime), `COPY --from=${c.from} names an earlier stage`);
    for (const s of c.sources) {
      if (c.from === 'build') t.ok(s.startsWith(`${buildWd}/${outDir}/`), `${s} is compiler output of the build stage (${buildWd}/${outDir})`);
      if (c.from === 'deps') t.equal(s, `${workdir(byName.get('deps')!)}/node_modules`, 'node_modules comes from the deps stage');
    }
  }

  t.ok(copied(join(wd, 'bin', 'tunnox.js')) && copied(join(wd, 'bin', 'healthcheck.js')), 'bin/ (entry point and healthcheck)');
  t.ok(copied(join(wd, 'package.json')), 'package.json');
  t.equal(pkg.type, 'module', 'which makes dist/ ES modules: the image cannot run without it');
  t.ok(copied(join(wd, 'node_modules')), 'node_modules');
  for (const f of await readdir(join(ROOT, 'proto'), { recursive: true })) {
    if (String(f).endsWith('.proto')) t.ok(copied(join(wd, 'proto', String(f))), `proto/${f} (read at run time by the bridge)`);
  }

  // Every compiled module main.js can load (static or dynamic import) is inside a copied folder.
  await built;
  const out = buildDir;
  const closure = await importClosure(join(out, 'dist', 'services', 'cli', 'main.js'));
  t.ok(closure.size > 50, `main.js loads ${closure.size} modules`);
  const missing = [...closure].filter((f) => !existsSync(f) || !copied(join(wd, relative(out, f))));
  t.same(missing, [], 'each one is built by tsconfig.build.json and copied into the image');
  t.notOk([...closure].some((f) => f.includes('testkit') || f.endsWith('.test.js')), 'no test code on the way');
});

t.test('replayed into a folder, the runtime tree runs a projector that the HEALTHCHECK command finds healthy', async (t) => {
  // The image's /opt/tunnox, assembled from its COPY instructions (node_modules linked, not copied).
  const out = await mkdtemp(join(tmpdir(), 'tnx-image-'));
  t.teardown(() => rm(out, { recursive: true, force: true }));
  await built;
  const build = buildDir;
  const tree = join(out, 'opt', 'tunnox');
  await mkdir(tree, { recursive: true });
  const buildWd = workdir(byName.get('build')!);
  for (const c of copies(runtime)) {
    for (const s of c.sources) {
      const dest = join(tree, c.dest, c.dest.endsWith('/') || c.sources.length > 1 ? s.split('/').pop()! : '');
      if (c.from === 'deps') await symlink(join(ROOT, 'node_modules'), dest);
      else if (c.from === 'build') await cp(join(build, relative(buildWd, s)), dest, { recursive: true });
      else await cp(join(ROOT, s), dest, { recursive: true });
    }
  }
  t.ok((await stat(join(tree, 'dist', 'migrations'))).isDirectory(), 'migrations are in the tree');
  const version = await run(process.execPath, [join(tree, 'bin', 'tunnox.js'), '--version'], { cwd: tree });
  t.match(version.stdout, /^\d+\.\d+\.\d+/, 'tunnox --version runs from the tree');
  const proto = await run(process.execPath, ['--input-type=module', '-e', "const m = await import('./dist/services/edge/bridge/proto.js'); m.bridgeService(); console.log(m.bridgeProtoPath());"], { cwd: tree });
  t.equal(proto.stdout.trim(), join(tree, 'proto', 'tunnox', 'bridge', 'v1', 'bridge.proto'), 'the bridge finds its .proto inside the tree');

  const database = await createTestDatabase('tnx_image', false);
  t.teardown(() => database.drop());
  const stream = uniqueName('TNX_IMG').toUpperCase();
  t.teardown(() => deleteStreams(stream));
  const metricsPort = await freePort();
  const env = { TUNNOX_METRICS_PORT: String(metricsPort) };
  const projector = spawnTunnox(['projector', '--nats', TEST_NATS_URL, '--stream', stream, '--subject-prefix', stream.toLowerCase(), '--database', database.url], env, tree);
  t.teardown(() => projector.stop());
  await projector.waitForLog((e) => e.msg === 'tunnox projector ready', 60_000);
  const healthcheck = (): Promise<number> =>
    run(process.execPath, [join(tree, 'bin', 'healthcheck.js')], { cwd: tree, env: { ...process.env, ...env } }).then(
      () => 0,
      (err: { code?: number }) => err.code ?? 1,
    );
  t.equal(await eventually('healthy', async () => ((await healthcheck()) === 0 ? 'ok' : undefined)), 'ok', 'HEALTHCHECK passes while the projector runs (migrations ran from the tree)');
  t.equal(await projector.stop(), 0, 'the projector stops on SIGTERM');
  t.equal(await healthcheck(), 1, 'and fails once it is gone');
});
