import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { DomainError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { clientDecider, type RegisterClient } from './client.decider.js';

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
  t.same(g.state, { exists: true, clientId: 600000000, clientType: 'managed', userId: 100000001, clientName: 'My Home Server' });
});

t.test('id range and ownership must fit the client type', async (t) => {
  const g = given(clientDecider, 'client.x', []);
  t.throws(() => g.when(register({ ...managed, client_id: 234567890 })), { code: 'TNX_CLIENT_INVALID', field: 'client_id' });
  t.throws(() => g.when(register({ ...managed, user_id: null })), { code: 'TNX_CLIENT_INVALID', field: 'user_id' });
  t.throws(() => g.when(register({ ...anonymous, client_id: 600000000 })), { code: 'TNX_CLIENT_INVALID', field: 'client_id' });
  t.throws(() => g.when(register({ ...anonymous, user_id: 100000001 })), { code: 'TNX_CLIENT_INVALID', field: 'user_id' });
  t.throws(() => g.when(register({ ...managed, auth_code_hash: '' })), { code: 'TNX_CLIENT_INVALID', field: 'auth_code_hash' });
});
