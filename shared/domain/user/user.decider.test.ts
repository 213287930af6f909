import t from 'tap';
import { DomainError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { RuleViolationError } from '../errors.js';
import { userDecider } from './user.decider.js';

const create = (data: { user_id: number; username: string; email: string }) => ({ type: 'CreateUser' as const, data });
const john = { user_id: 100000001, username: 'john_doe', email: 'john@example.com' };

t.test('CreateUser on a new stream records an active user', async (t) => {
  t.same(given(userDecider, 'user.100000001', []).when(create(john)), [
    { type: 'UserCreated', data: { ...john, status: 'active' } },
  ]);
});

t.test('CreateUser twice is refused with TNX_USER_ALREADY_EXISTS', async (t) => {
  const g = given(userDecider, 'user.100000001', [{ type: 'UserCreated', data: { ...john, status: 'active' } }]);
  t.throws(() => g.when(create(john)), { code: 'TNX_USER_ALREADY_EXISTS' });
  t.throws(() => g.when(create(john)), DomainError);
  t.same(g.state, { exists: true, userId: 100000001, username: 'john_doe', email: 'john@example.com', status: 'active' });
});

t.test('CreateUser outside the user id range is a rule violation on user_id', async (t) => {
  const g = given(userDecider, 'user.5', []);
  t.throws(() => g.when(create({ ...john, user_id: 5 })), { code: 'TNX_USER_INVALID', field: 'user_id' });
  t.throws(() => g.when(create({ ...john, user_id: 5 })), RuleViolationError);
});

t.test('CreateUser with an empty username or a non-address email names the field', async (t) => {
  const g = given(userDecider, 'user.100000001', []);
  t.throws(() => g.when(create({ ...john, username: '' })), { code: 'TNX_USER_INVALID', field: 'username' });
  t.throws(() => g.when(create({ ...john, email: 'nope' })), { code: 'TNX_USER_INVALID', field: 'email' });
});
