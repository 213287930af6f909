import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { given } from '../decider.testkit.js';
import { localPortDecider } from './localport.decider.js';
import { localPortStream } from './localport.commands.js';

const CLIENT = 600000001;
const stream = localPortStream(CLIENT, 13306);
const reserve = (mapping_id: number, port = 13306) => ({ type: 'ReserveLocalPort' as const, data: { client_id: CLIENT, port, mapping_id } });
const release = (mapping_id: number) => ({ type: 'ReleaseLocalPort' as const, data: { client_id: CLIENT, port: 13306, mapping_id } });
const reserved = (mapping_id: number): DomainEvent => ({ type: 'LocalPortReserved', data: { client_id: CLIENT, port: 13306, mapping_id } });
const released = (mapping_id: number): DomainEvent => ({ type: 'LocalPortReleased', data: { client_id: CLIENT, port: 13306, mapping_id } });

t.test('the stream name is one NATS-safe token per (client, port)', async (t) => {
  t.equal(stream, 'localport.600000001_13306');
});

t.test('ReserveLocalPort on a free port records LocalPortReserved', async (t) => {
  t.same(given(localPortDecider, stream, []).when(reserve(1001)), [reserved(1001)]);
  t.same(given(localPortDecider, stream, [reserved(1001), released(1001)]).when(reserve(1002)), [reserved(1002)]);
});

t.test('ReserveLocalPort on a port held by another mapping is TNX_LOCAL_PORT_TAKEN naming local_port', async (t) => {
  t.throws(() => given(localPortDecider, stream, [reserved(1001)]).when(reserve(1002)), { code: 'TNX_LOCAL_PORT_TAKEN', details: { field: 'local_port' } });
});

t.test('retried reservations and releases decide nothing', async (t) => {
  t.same(given(localPortDecider, stream, [reserved(1001)]).when(reserve(1001)), []);
  t.same(given(localPortDecider, stream, []).when(release(1001)), []);
  t.same(given(localPortDecider, stream, [reserved(1001), released(1001)]).when(release(1001)), []);
});

t.test('only the holder releases', async (t) => {
  t.same(given(localPortDecider, stream, [reserved(1001)]).when(release(1001)), [released(1001)]);
  t.throws(() => given(localPortDecider, stream, [reserved(1001)]).when(release(1002)), { code: 'TNX_LOCAL_PORT_NOT_HELD' });
});

t.test('the state is a function of the last event (the handler folds only that one)', async (t) => {
  const history = [reserved(1001), released(1001), reserved(1002)];
  t.same(given(localPortDecider, stream, history).state, given(localPortDecider, stream, history.slice(-1)).state);
  t.same(given(localPortDecider, stream, history.slice(0, 2)).state, given(localPortDecider, stream, history.slice(1, 2)).state);
});

t.test('a port outside 1-65535 is refused', async (t) => {
  t.throws(() => given(localPortDecider, stream, []).when(reserve(1001, 0)), { code: 'TNX_MAPPING_INVALID', field: 'local_port' });
});
