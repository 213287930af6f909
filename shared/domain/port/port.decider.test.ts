import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { DomainError } from '../../platform/errors.js';
import { given } from '../decider.testkit.js';
import { portDecider } from './port.decider.js';

const stream = 'port.30000';
const reserve = (mapping_id: number, port = 30000) => ({ type: 'ReservePublicPort' as const, data: { port, mapping_id } });
const release = (mapping_id: number, port = 30000) => ({ type: 'ReleasePublicPort' as const, data: { port, mapping_id } });
const reserved = (mapping_id: number): DomainEvent => ({ type: 'PublicPortReserved', data: { port: 30000, mapping_id } });
const released = (mapping_id: number): DomainEvent => ({ type: 'PublicPortReleased', data: { port: 30000, mapping_id } });

t.test('ReservePublicPort on a free port records PublicPortReserved', async (t) => {
  t.same(given(portDecider, stream, []).when(reserve(1001)), [reserved(1001)]);
  t.same(given(portDecider, stream, [reserved(1001), released(1001)]).when(reserve(1002)), [reserved(1002)]);
});

t.test('ReservePublicPort on a port held by another mapping is TNX_PORT_IN_USE', async (t) => {
  const g = given(portDecider, stream, [reserved(1001)]);
  t.throws(() => g.when(reserve(1002)), { code: 'TNX_PORT_IN_USE' });
  t.throws(() => g.when(reserve(1002)), DomainError);
});

t.test('ReservePublicPort again by the holder decides nothing (a retried reservation)', async (t) => {
  t.same(given(portDecider, stream, [reserved(1001)]).when(reserve(1001)), []);
});

t.test('ReleasePublicPort by the holder records PublicPortReleased', async (t) => {
  t.same(given(portDecider, stream, [reserved(1001)]).when(release(1001)), [released(1001)]);
});

t.test('ReleasePublicPort by another mapping is TNX_PORT_NOT_HELD', async (t) => {
  t.throws(() => given(portDecider, stream, [reserved(1001)]).when(release(1002)), { code: 'TNX_PORT_NOT_HELD' });
});

t.test('ReleasePublicPort of a free port decides nothing (a retried release)', async (t) => {
  t.same(given(portDecider, stream, []).when(release(1001)), []);
  t.same(given(portDecider, stream, [reserved(1001), released(1001)]).when(release(1001)), []);
});

t.test('a port outside 1-65535 is refused', async (t) => {
  t.throws(() => given(portDecider, 'port.0', []).when(reserve(1001, 0)), { code: 'TNX_PORT_OUT_OF_RANGE', field: 'public_port' });
  t.throws(() => given(portDecider, 'port.70000', []).when(reserve(1001, 70000)), { code: 'TNX_PORT_OUT_OF_RANGE' });
});

t.test("an operator's ReleasePublicPort records its reason", async (t) => {
  const command = { type: 'ReleasePublicPort' as const, data: { port: 30000, mapping_id: 1001, reason: 'crash leftover' } };
  t.same(given(portDecider, stream, [reserved(1001)]).when(command), [{ type: 'PublicPortReleased', data: { port: 30000, mapping_id: 1001, reason: 'crash leftover' } }]);
});
