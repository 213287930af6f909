import t from 'tap';
import { SEQUENCE_MAX } from '../../contracts/ids.js';
import { DomainError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { sequenceDecider } from './sequence.decider.js';

const allocate = (sequence: 'user' | 'managed-client' | 'mapping') => ({ type: 'AllocateId' as const, data: { sequence } });

t.test('a fresh sequence hands out its start id', async (t) => {
  t.same(given(sequenceDecider, 'sequence.user', []).when(allocate('user')), [{ type: 'IdAllocated', data: { sequence: 'user', id: 100000001 } }]);
  t.same(given(sequenceDecider, 'sequence.managed-client', []).when(allocate('managed-client')), [
    { type: 'IdAllocated', data: { sequence: 'managed-client', id: 600000000 } },
  ]);
  t.same(given(sequenceDecider, 'sequence.mapping', []).when(allocate('mapping')), [{ type: 'IdAllocated', data: { sequence: 'mapping', id: 1001 } }]);
});

t.test('after allocations the next id is last + 1', async (t) => {
  const events = given(sequenceDecider, 'sequence.mapping', [
    { type: 'IdAllocated', data: { sequence: 'mapping', id: 1001 } },
    { type: 'IdAllocated', data: { sequence: 'mapping', id: 1002 } },
  ]).when(allocate('mapping'));
  t.same(events, [{ type: 'IdAllocated', data: { sequence: 'mapping', id: 1003 } }]);
});

t.test('an exhausted sequence refuses with TNX_SEQUENCE_EXHAUSTED', async (t) => {
  const g = given(sequenceDecider, 'sequence.user', [{ type: 'IdAllocated', data: { sequence: 'user', id: SEQUENCE_MAX.user } }]);
  t.throws(() => g.when(allocate('user')), { code: 'TNX_SEQUENCE_EXHAUSTED' });
  t.throws(() => g.when(allocate('user')), DomainError);
});

t.test('the last id of the range is still handed out', async (t) => {
  const g = given(sequenceDecider, 'sequence.user', [{ type: 'IdAllocated', data: { sequence: 'user', id: SEQUENCE_MAX.user - 1 } }]);
  t.same(g.when(allocate('user')), [{ type: 'IdAllocated', data: { sequence: 'user', id: SEQUENCE_MAX.user } }]);
});
