import { Writable } from 'node:stream';
import t from 'tap';
import { createLogger } from './logger.js';

t.test('secrets are redacted at the top level and nested', async (t) => {
  let out = '';
  const sink = new Writable({ write: (chunk, _enc, cb) => ((out += String(chunk)), cb()) });
  const log = createLogger({ level: 'info' }, sink);
  log.info(
    {
      auth_code: 'S1', apiKey: 'S2', client: { auth_code: 'S3' }, a: { b: { secret_key: 'S4' } }, mappings: [{ secret_key: 'S5' }], proof: 'S6',
      session_token: 'S7', hs: { session_token: 'S8' }, cmd: { payload: { token: 'S9' } }, keep: 'visible',
    },
    'hello',
  );
  await new Promise((r) => setImmediate(r));
  t.notMatch(out, /S[1-9]/, 'no secret value reaches the log line');
  t.match(out, /visible/, 'other fields are kept');
  t.match(out, /\[redacted\]/);
});
