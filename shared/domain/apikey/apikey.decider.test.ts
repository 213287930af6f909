import t from 'tap';
import { apiKeyDecider } from './apikey.decider.js';
import { API_KEY_PATTERN, hashApiKey, parseApiKeyId } from './apikey.commands.js';
import { isSecretField } from '../../contracts/audit.js';

const created = { type: 'ApiKeyCreated', data: { apikey_id: 'abcdef0123456789', name: 'ci', key_hash: 'a'.repeat(64) }, occurred_at: '2026-12-04T00:00:00Z' };

t.test('create, revoke, and what each refuses', async (t) => {
  const none = apiKeyDecider.initialState();
  t.same(apiKeyDecider.decide({ type: 'CreateApiKey', data: created.data }, none), [created].map(({ type, data }) => ({ type, data })));
  const active = apiKeyDecider.evolve(none, created as never);
  t.match(active, { status: 'active', name: 'ci' });
  t.throws(() => apiKeyDecider.decide({ type: 'CreateApiKey', data: created.data }, active), { code: 'TNX_API_KEY_EXISTS' }, 'an id is never reused');
  t.throws(() => apiKeyDecider.decide({ type: 'RevokeApiKey', data: { apikey_id: 'abcdef0123456789' } }, none), { code: 'TNX_API_KEY_NOT_FOUND' });
  const revoke = apiKeyDecider.decide({ type: 'RevokeApiKey', data: { apikey_id: 'abcdef0123456789', reason: 'left' } }, active);
  t.same(revoke, [{ type: 'ApiKeyRevoked', data: { apikey_id: 'abcdef0123456789', reason: 'left' } }]);
  const revoked = apiKeyDecider.evolve(active, { type: 'ApiKeyRevoked', data: revoke[0]!.data } as never);
  t.equal(revoked.status, 'revoked');
  t.same(apiKeyDecider.decide({ type: 'RevokeApiKey', data: { apikey_id: 'abcdef0123456789' } }, revoked), [], 'revoking twice decides nothing');
});

t.test('key format and redaction', async (t) => {
  const key = `tnx_abcdef0123456789_${'x'.repeat(43)}`;
  t.ok(API_KEY_PATTERN.test(key));
  t.equal(parseApiKeyId(key), 'abcdef0123456789');
  for (const bad of ['', 'tnx_', `tnx_ABCDEF0123456789_${'x'.repeat(43)}`, `tnx_abcdef0123456789_${'x'.repeat(42)}`, `${key}\u0000`, ` ${key}`]) {
    t.equal(parseApiKeyId(bad), null, JSON.stringify(bad));
  }
  t.equal(hashApiKey(key).length, 64);
  t.ok(isSecretField('key_hash'), 'the digest is redacted in audit output');
  t.notOk(isSecretField('apikey_id'), 'the id is not');
});
