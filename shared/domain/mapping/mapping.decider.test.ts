import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { DomainError, NotFoundError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { RuleViolationError } from '../errors.js';
import { mappingDecider, type CreateMapping } from './mapping.decider.js';

const c2c: CreateMapping['data'] = {
  mapping_id: 1001,
  user_id: 100000001,
  protocol: 'tcp',
  source_client_id: 600000000,
  target_client_id: 600000001,
  target_host: 'localhost',
  target_port: 3306,
  local_host: null,
  local_port: 13306,
  public_port: null,
};
const pub: CreateMapping['data'] = { ...c2c, mapping_id: 1002, source_client_id: null, local_port: null, public_port: 30000 };
const create = (data: CreateMapping['data']): CreateMapping => ({ type: 'CreateMapping', data });
const del = (mapping_id: number) => ({ type: 'DeleteMapping' as const, data: { mapping_id } });
const created = (data: CreateMapping['data']): DomainEvent => ({ type: 'MappingCreated', data: { ...data, protocol: 'tcp', enabled: true, secret_generation: 1 } });

t.test('CreateMapping (client-to-client) records an enabled MappingCreated', async (t) => {
  t.same(given(mappingDecider, 'mapping.1001', []).when(create(c2c)), [created(c2c)]);
});

t.test('a new mapping starts at secret generation 1 and its event holds no secret', async (t) => {
  const [event] = given(mappingDecider, 'mapping.1001', []).when(create(c2c));
  t.match(event, { type: 'MappingCreated', data: { secret_generation: 1 } });
  t.notOk('secret_key' in (event!.data as object), 'no secret_key');
});

t.test('RotateMappingSecret records the next generation; only an active mapping rotates', async (t) => {
  const rotate = { type: 'RotateMappingSecret' as const, data: { mapping_id: 1001 } };
  t.same(given(mappingDecider, 'mapping.1001', [created(c2c)]).when(rotate), [{ type: 'MappingSecretRotated', data: { mapping_id: 1001, secret_generation: 2 } }]);
  const twice = given(mappingDecider, 'mapping.1001', [created(c2c), { type: 'MappingSecretRotated', data: { mapping_id: 1001, secret_generation: 2 } }]);
  t.same(twice.when(rotate), [{ type: 'MappingSecretRotated', data: { mapping_id: 1001, secret_generation: 3 } }]);
  t.throws(() => given(mappingDecider, 'mapping.1001', []).when(rotate), NotFoundError);
  t.throws(() => given(mappingDecider, 'mapping.1001', [created(c2c), { type: 'MappingDeleted', data: { mapping_id: 1001 } }]).when(rotate), { code: 'TNX_MAPPING_NOT_FOUND' });
});

t.test('CreateMapping (public) records an enabled MappingCreated', async (t) => {
  t.same(given(mappingDecider, 'mapping.1002', []).when(create(pub)), [created(pub)]);
});

t.test('CreateMapping on an existing or deleted mapping is refused', async (t) => {
  const active = given(mappingDecider, 'mapping.1001', [created(c2c)]);
  t.throws(() => active.when(create(c2c)), { code: 'TNX_MAPPING_ALREADY_EXISTS' });
  t.throws(() => active.when(create(c2c)), DomainError);
  const deleted = given(mappingDecider, 'mapping.1001', [created(c2c), { type: 'MappingDeleted', data: { mapping_id: 1001 } }]);
  t.throws(() => deleted.when(create(c2c)), { code: 'TNX_MAPPING_ALREADY_EXISTS' });
});

t.test('only tcp is supported', async (t) => {
  const g = given(mappingDecider, 'mapping.1001', []);
  t.throws(() => g.when(create({ ...c2c, protocol: 'udp' })), { code: 'TNX_MAPPING_UNSUPPORTED_PROTOCOL', field: 'protocol' });
  t.throws(() => g.when(create({ ...c2c, protocol: 'udp' })), RuleViolationError);
});

t.test('shape rules name the offending field', async (t) => {
  const g = given(mappingDecider, 'mapping.1001', []);
  const cases: [string, CreateMapping['data'], string][] = [
    ['source equals target', { ...c2c, target_client_id: c2c.source_client_id as number }, 'target_client_id'],
    ['client-to-client without local_port', { ...c2c, local_port: null }, 'local_port'],
    ['client-to-client with a public_port', { ...c2c, public_port: 30000 }, 'public_port'],
    ['client-to-client with an empty local_host', { ...c2c, local_host: '' }, 'local_host'],
    ['public without public_port', { ...pub, public_port: null }, 'public_port'],
    ['public with a local_port', { ...pub, local_port: 13306 }, 'local_port'],
    ['public with a local_host', { ...pub, local_host: '127.0.0.1' }, 'local_host'],
    ['target_port out of range', { ...c2c, target_port: 70000 }, 'target_port'],
    ['local_port out of range', { ...c2c, local_port: 0 }, 'local_port'],
    ['public_port out of range', { ...pub, public_port: 65536 }, 'public_port'],
    ['empty target_host', { ...c2c, target_host: '' }, 'target_host'],
  ];
  for (const [name, data, field] of cases) {
    t.throws(() => g.when(create(data)), { code: 'TNX_MAPPING_INVALID', field }, name);
  }
});

t.test('DeleteMapping on an active mapping records MappingDeleted', async (t) => {
  t.same(given(mappingDecider, 'mapping.1002', [created(pub)]).when(del(1002)), [{ type: 'MappingDeleted', data: { mapping_id: 1002 } }]);
});

t.test('DeleteMapping of an unknown or deleted mapping is TNX_MAPPING_NOT_FOUND', async (t) => {
  t.throws(() => given(mappingDecider, 'mapping.1001', []).when(del(1001)), { code: 'TNX_MAPPING_NOT_FOUND' });
  const deleted = given(mappingDecider, 'mapping.1001', [created(c2c), { type: 'MappingDeleted', data: { mapping_id: 1001 } }]);
  t.throws(() => deleted.when(del(1001)), { code: 'TNX_MAPPING_NOT_FOUND' });
  t.throws(() => deleted.when(del(1001)), NotFoundError);
  t.match(deleted.state, { status: 'deleted', mapping: { mapping_id: 1001, local_port: 13306 } });
});
