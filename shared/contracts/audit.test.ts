import t from 'tap';
import { REDACTED, auditAggregates, auditEvent, isSecretField, parseAggregateRef, redactSecrets } from './audit.js';
import type { StoredEvent } from './envelope.js';
import { AGGREGATES } from './events.js';

t.test('the redaction rule: secret-like field names', async (t) => {
  const secret = [
    'auth_code_hash', 'secret_key', 'secret', 'password', 'password_hash', 'passwd', 'passphrase', 'sessionToken', 'session_token',
    'refresh-token', 'api_key', 'apiKey', 'APIKey', 'keys', 'private_keys', 'hash', 'hashes', 'salt', 'clientSecrets', 'credentials',
    'auth_code', 'authCode', 'signature', 'key_count',
  ];
  const plain = [
    'mapping_id', 'public_port', 'client_name', 'user_id', 'auth_epoch', 'code', 'authority', 'monkey', 'keyboard', 'hashtag_count',
    'status', 'email', 'reason', 'event_id', 'position', 'auth', 'code_auth', 'secret_generation', 'secretGeneration',
  ];
  for (const name of secret) t.ok(isSecretField(name), `${name} is secret-like`);
  for (const name of plain) t.notOk(isSecretField(name), `${name} is not`);
});

t.test('redactSecrets replaces values at any depth, lists their paths and leaves the input alone', async (t) => {
  const input = {
    mapping_id: 1001,
    secret_key: 'a'.repeat(64),
    nested: { api_token: { any: 'shape' }, name: 'x', list: [{ password: 'p' }, { ok: 1 }] },
    hashes: ['h1', 'h2'],
  };
  const copy = structuredClone(input);
  const { data, redacted } = redactSecrets(input);
  t.same(data, {
    mapping_id: 1001,
    secret_key: REDACTED,
    nested: { api_token: REDACTED, name: 'x', list: [{ password: REDACTED }, { ok: 1 }] },
    hashes: REDACTED,
  });
  t.same(redacted, ['secret_key', 'nested.api_token', 'nested.list[0].password', 'hashes']);
  t.same(input, copy, 'input unchanged');
  t.same(redactSecrets(null), { data: null, redacted: [] });
  t.same(redactSecrets('text'), { data: 'text', redacted: [] });
});

t.test('aggregate references', async (t) => {
  t.same(parseAggregateRef('mapping:1001'), { aggregate: 'mapping', id: '1001', stream: 'mapping.1001' });
  t.same(parseAggregateRef('localport:600000001_13306'), { aggregate: 'localport', id: '600000001_13306', stream: 'localport.600000001_13306' });
  t.same(parseAggregateRef('sequence:managed-client'), { aggregate: 'sequence', id: 'managed-client', stream: 'sequence.managed-client' });
  t.same(parseAggregateRef('client-session:600000001'), { aggregate: 'client-session', id: '600000001', stream: 'client-session.600000001' });
  t.match(parseAggregateRef('mapping'), { problem: /<aggregate>:<id>/ });
  t.match(parseAggregateRef('mapping:10.01'), { problem: /<aggregate>:<id>/ });
  t.match(parseAggregateRef('mapping:*'), { problem: /<aggregate>:<id>/ });
  t.match(parseAggregateRef('mappings:1001'), { problem: /unknown aggregate mappings \(one of .*mapping/ });
  t.match(parseAggregateRef('mapping:01001'), { problem: /leading zeros/ });
  for (const a of Object.values(AGGREGATES)) t.ok(auditAggregates().includes(a), `${a} is known`);
});

t.test('auditEvent shows a malformed stored envelope with nulls instead of failing', async (t) => {
  const malformed = { id: 'x', type: 'UserCreated', data: { user_id: 1, password: 'p' }, position: 7, version: 1, stream: 'user.1' } as unknown as StoredEvent;
  t.same(auditEvent(malformed), {
    position: 7, stream: 'user.1', version: 1, id: 'x', type: 'UserCreated', schema_version: null, aggregate_type: 'user', aggregate_id: '1',
    occurred_at: null, actor: null, correlation_id: null, causation_id: null, data: { user_id: 1, password: REDACTED }, redacted: ['password'],
  });
});
