import t from 'tap';
import type { DomainEvent } from '../../contracts/events.js';
import { given } from '../decider.testkit.js';
import { clientSessionDecider } from './client-session.decider.js';

const stream = 'client-session.600000000';
const connected = { client_id: 600000000, node_id: 'node-001', session_id: 's1', remote_addr: '127.0.0.1:50000' };
const disconnected = { client_id: 600000000, node_id: 'node-001', session_id: 's1', reason: 'closed' };

t.test('RecordClientConnected records ClientConnected, whatever came before', async (t) => {
  t.same(given(clientSessionDecider, stream, []).when({ type: 'RecordClientConnected', data: connected }), [
    { type: 'ClientConnected', data: connected },
  ]);
  const past: DomainEvent[] = [{ type: 'ClientConnected', data: connected }];
  const relogin = { ...connected, node_id: 'node-002', session_id: 's2' };
  t.same(given(clientSessionDecider, stream, past).when({ type: 'RecordClientConnected', data: relogin }), [
    { type: 'ClientConnected', data: relogin },
  ]);
});

t.test('RecordClientDisconnected records ClientDisconnected (facts are never refused)', async (t) => {
  t.same(given(clientSessionDecider, stream, []).when({ type: 'RecordClientDisconnected', data: disconnected }), [
    { type: 'ClientDisconnected', data: disconnected },
  ]);
});

t.test('state tracks the current session; a stale disconnect does not end a newer session', async (t) => {
  const s2 = { ...connected, node_id: 'node-002', session_id: 's2' };
  t.same(given(clientSessionDecider, stream, [{ type: 'ClientConnected', data: connected }]).state, {
    current: { nodeId: 'node-001', sessionId: 's1' },
  });
  t.same(
    given(clientSessionDecider, stream, [
      { type: 'ClientConnected', data: connected },
      { type: 'ClientConnected', data: s2 },
      { type: 'ClientDisconnected', data: disconnected },
    ]).state,
    { current: { nodeId: 'node-002', sessionId: 's2' } },
  );
  t.same(
    given(clientSessionDecider, stream, [
      { type: 'ClientConnected', data: connected },
      { type: 'ClientDisconnected', data: disconnected },
    ]).state,
    { current: null },
  );
});
