import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'scripts', 'pg-hba-allow-tests.sh');
const run = promisify(execFile);

// Debian's pg_hba.conf as the postgresql package installs it (comments shortened).
const DEBIAN_DEFAULT = `# PostgreSQL Client Authentication Configuration File
# ===================================================
#
# TYPE  DATABASE        USER            ADDRESS                 METHOD

# Database administrative login by Unix domain socket
local   all             postgres                                peer

# "local" is for Unix domain socket connections only
local   all             all                                     peer
# IPv4 local connections:
host    all             all             127.0.0.1/32            scram-sha-256
# IPv6 local connections:
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
`;

const rules = (text: string): string[] => text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));

t.test('pg_hba: one marked loopback rule for the test user, ahead of the others, added once', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-hba-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hba = join(dir, 'pg_hba.conf');
  await writeFile(hba, DEBIAN_DEFAULT);
  await chmod(hba, 0o640);

  await run('bash', [SCRIPT, hba]);
  const once = await readFile(hba, 'utf8');
  const added = rules(once).filter((l) => !rules(DEBIAN_DEFAULT).includes(l));
  t.equal(added.length, 1, 'exactly one rule is added');
  t.match(added[0], /^host\s+all\s+postgres\s+127\.0\.0\.1\/32\s+trust\s+# tunnox-test-access: /, 'trust for postgres from 127.0.0.1 only, marked as Tunnox\'s');
  t.equal(rules(once)[0], added[0], 'it comes first, so it is the rule that matches');
  t.same(rules(once).slice(1), rules(DEBIAN_DEFAULT), 'every other rule is unchanged (nothing else becomes trust)');
  t.same(once.split('\n').filter((l) => l !== added[0]), DEBIAN_DEFAULT.split('\n'), 'and so is every other line');
  t.equal((await stat(hba)).mode & 0o777, 0o640, 'the file keeps its mode');

  await run('bash', [SCRIPT, hba]);
  t.equal(await readFile(hba, 'utf8'), once, 'a second run changes nothing');
});

t.test('pg_hba: a file without rules gets the rule at the end; a missing file is an error', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-hba-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hba = join(dir, 'pg_hba.conf');
  await writeFile(hba, '# nothing yet\n');
  await run('bash', [SCRIPT, hba]);
  const lines = (await readFile(hba, 'utf8')).split('\n');
  t.equal(lines[0], '# nothing yet');
  t.match(lines[1], /^host\s+all\s+postgres\s+127\.0\.0\.1\/32\s+trust\s+# tunnox-test-access/);
  await t.rejects(run('bash', [SCRIPT, join(dir, 'absent.conf')]), /no such file/);
});
