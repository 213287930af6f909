import t from 'tap';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCredentials, saveCredentials } from './credentials.js';

t.test('credentials: save (0600, parent created) and load back', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-creds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'a', 'b', 'credentials.json');
  t.equal(await loadCredentials(path), undefined, 'no file: no credentials');
  const creds = { server: 'edge:8080', client_id: 200000042, auth_code: 'tnxc_secret' };
  await saveCredentials(path, creds);
  t.equal((await stat(path)).mode & 0o777, 0o600);
  t.same(await loadCredentials(path), creds);
  await saveCredentials(path, { ...creds, client_id: 200000043 });
  t.equal((await loadCredentials(path))?.client_id, 200000043, 'overwrite is atomic and complete');
  t.same(JSON.parse(await readFile(path, 'utf8')), { ...creds, client_id: 200000043 });
});

t.test('credentials: unusable files are refused with the path in the message', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tnx-creds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cases: [string, string][] = [
    ['not json', '{'],
    ['missing field', JSON.stringify({ server: 'x:1', client_id: 200000001 })],
    ['unknown key', JSON.stringify({ server: 'x:1', client_id: 200000001, auth_code: 'c', extra: true })],
    ['wrong type', JSON.stringify({ server: 'x:1', client_id: '200000001', auth_code: 'c' })],
  ];
  for (const [label, text] of cases) {
    const path = join(dir, `${label.replace(/ /g, '-')}.json`);
    await writeFile(path, text);
    await t.rejects(loadCredentials(path), { name: 'AgentFatalError', code: 'TNX_AGENT_CREDENTIALS_INVALID', message: path }, label);
  }
});
