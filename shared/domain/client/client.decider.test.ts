import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { DomainError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { clientDecider, type ClientCommand, type RegisterClient } from './client.decider.js';

const managed: RegisterClient['data'] = {
  client_id: 600000000,
  client_type: 'managed',
  user_id: 100000001,
  client_name: 'My Home Server',
  auth_code_hash: 'scrypt$16384$8$1$c2FsdA==$aGFzaA==',
};
const anonymous: RegisterClient['data'] = {
  client_id: 234567890,
  client_type: 'anonymous',
  user_id: null,
  client_name: 'anonymous-234567890',
  auth_code_hash: 'scrypt$16384$8$1$c2FsdA==$aGFzaA==',
};
const register = (data: RegisterClient['data']): RegisterClient => ({ type: 'RegisterClient', data });

t.test('RegisterClient (managed) records ClientRegistered with the hash only', async (t) => {
  t.same(given(clientDecider, 'client.600000000', []).when(register(managed)), [{ type: 'ClientRegistered', data: managed }]);
});

t.test('RegisterClient keeps an optional description', async (t) => {
  const events = given(clientDecider, 'client.600000000', []).when(register({ ...managed, client_desc: 'Ubuntu 22.04 NAS' }));
  t.same(events, [{ type: 'ClientRegistered', data: { ...managed, client_desc: 'Ubuntu 22.04 NAS' } }]);
});

t.test('RegisterClient (anonymous) records an ownerless client', async (t) => {
  t.same(given(clientDecider, 'client.234567890', []).when(register(anonymous)), [{ type: 'ClientRegistered', data: anonymous }]);
});

t.test('RegisterClient on an existing client is refused with TNX_CLIENT_ALREADY_EXISTS', async (t) => {
  const past: DomainEvent[] = [{ type: 'ClientRegistered', data: managed }];
  const g = given(clientDecider, 'client.600000000', past);
  t.throws(() => g.when(register(managed)), { code: 'TNX_CLIENT_ALREADY_EXISTS' });
  t.throws(() => g.when(register(managed)), DomainError);
  t.same(g.state, { exists: true, clientId: 600000000, clientType: 'managed', userId: 100000001, clientName: 'My Home Server', enabled: true });
});

t.test('id range and ownership must fit the client type', async (t) => {
  const g = given(clientDecider, 'client.x', []);
  t.throws(() => g.when(register({ ...managed, client_id: 234567890 })), { code: 'TNX_CLIENT_INVALID', field: 'client_id' });
  t.throws(() => g.when(register({ ...managed, user_id: null })), { code: 'TNX_CLIENT_INVALID', field: 'user_id' });
  t.throws(() => g.when(register({ ...anonymous, client_id: 600000000 })), { code: 'TNX_CLIENT_INVALID', field: 'client_id' });
  t.throws(() => g.when(register({ ...anonymous, user_id: 100000001 })), { code: 'TNX_CLIENT_INVALID', field: 'user_id' });
  t.throws(() => g.when(register({ ...managed, auth_code_hash: '' })), { code: 'TNX_CLIENT_INVALID', field: 'auth_code_hash' });
});

const id = { client_id: 600000000 };
const registered: DomainEvent = { type: 'ClientRegistered', data: managed };
const cmd = (type: Exclude<ClientCommand['type'], 'RegisterClient' | 'RotateClientAuthCode'>): ClientCommand => ({ type, data: id }) as ClientCommand;

t.test('DisableClient / EnableClient toggle, and a repeat decides nothing', async (t) => {
  t.same(given(clientDecider, 'client.600000000', [registered]).when(cmd('DisableClient')), [{ type: 'ClientDisabled', data: id }]);
  t.same(given(clientDecider, 'client.600000000', [registered]).when(cmd('EnableClient')), [], 'already enabled');
  const disabled = given(clientDecider, 'client.600000000', [registered, { type: 'ClientDisabled', data: id }]);
  t.equal(disabled.state.exists && disabled.state.enabled, false);
  t.same(disabled.when(cmd('DisableClient')), [], 'already disabled');
  t.same(disabled.when(cmd('EnableClient')), [{ type: 'ClientEnabled', data: id }]);
});

t.test('RotateClientAuthCode records the new hash only; KickClient always happens', async (t) => {
  const g = given(clientDecider, 'client.600000000', [registered, { type: 'ClientKicked', data: id }]);
  const hash = 'scrypt$16384$8$1$bmV3$bmV3';
  t.same(g.when({ type: 'RotateClientAuthCode', data: { ...id, auth_code_hash: hash } }), [{ type: 'ClientAuthCodeRotated', data: { ...id, auth_code_hash: hash } }]);
  t.throws(() => g.when({ type: 'RotateClientAuthCode', data: { ...id, auth_code_hash: '' } }), { code: 'TNX_CLIENT_INVALID', field: 'auth_code_hash' });
  t.same(g.when(cmd('KickClient')), [{ type: 'ClientKicked', data: id }], 'a second kick is a second revocation');
});

t.test('DeleteClient: afterwards the client is not found and its id is never registered again', async (t) => {
  t.same(given(clientDecider, 'client.600000000', [registered]).when(cmd('DeleteClient')), [{ type: 'ClientDeleted', data: id }]);
  const g = given(clientDecider, 'client.600000000', [registered, { type: 'ClientDeleted', data: id }]);
  t.same(g.state, { exists: false, deleted: true, userId: managed.user_id }, 'the owner is kept so cascades can finish');
  for (const type of ['DisableClient', 'EnableClient', 'KickClient', 'DeleteClient'] as const) {
    t.throws(() => g.when(cmd(type)), { code: 'TNX_CLIENT_NOT_FOUND' }, type);
  }
  t.throws(() => g.when(register(managed)), { code: 'TNX_CLIENT_ALREADY_EXISTS' });
});

t.test('commands on a client that never existed: TNX_CLIENT_NOT_FOUND', async (t) => {
  const g = given(clientDecider, 'client.600000000', []);
  t.throws(() => g.when(cmd('KickClient')), { code: 'TNX_CLIENT_NOT_FOUND' });
  t.throws(() => g.when({ type: 'RotateClientAuthCode', data: { ...id, auth_code_hash: 'h' } }), { code: 'TNX_CLIENT_NOT_FOUND' });
});

t.test('ExpireClient: an anonymous client expires (ClientExpired), then is gone like a deleted one', async (t) => {
  const past: DomainEvent[] = [{ type: 'ClientRegistered', data: anonymous }];
  const expire: ClientCommand = { type: 'ExpireClient', data: { client_id: anonymous.client_id, inactive_since: '2025-01-01T00:00:00.000Z', ttl_seconds: 2_592_000 } };
  const events = given(clientDecider, 'client.234567890', past).when(expire);
  t.same(events, [{ type: 'ClientExpired', data: expire.data }]);
  const after = given(clientDecider, 'client.234567890', [...past, ...events]);
  t.same(after.state, { exists: false, deleted: true, userId: null });
  t.throws(() => after.when(expire), { code: 'TNX_CLIENT_NOT_FOUND' }, 'a second sweeper finds it gone');
  t.throws(() => after.when(register(anonymous)), { code: 'TNX_CLIENT_ALREADY_EXISTS' }, 'its id is never reused');
});

t.test('ExpireClient refuses managed clients and nonsense input', async (t) => {
  const g = given(clientDecider, 'client.600000000', [{ type: 'ClientRegistered', data: managed }]);
  t.throws(() => g.when({ type: 'ExpireClient', data: { client_id: managed.client_id, inactive_since: '2025-01-01T00:00:00Z', ttl_seconds: 60 } }), { code: 'TNX_CLIENT_INVALID' });
  const a = given(clientDecider, 'client.234567890', [{ type: 'ClientRegistered', data: anonymous }]);
  t.throws(() => a.when({ type: 'ExpireClient', data: { client_id: anonymous.client_id, inactive_since: '2025-01-01T00:00:00Z', ttl_seconds: 0 } }), { code: 'TNX_CLIENT_INVALID' });
  t.throws(() => a.when({ type: 'ExpireClient', data: { client_id: anonymous.client_id, inactive_since: 'yesterday', ttl_seconds: 60 } }), { code: 'TNX_CLIENT_INVALID' });
});
