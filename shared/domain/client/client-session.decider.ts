import type { DomainEvent, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';

/**
 * Stream `client-session.<client_id>`: facts reported by edges. They are recorded, never rejected
 * (an edge observed them), and appended without a revision check, so two edges racing over a
 * re-login both get their facts in. Readers order them by position; the session id tells a stale
 * disconnect (of a replaced session) from the current one.
 */
export type RecordClientConnected = {
  readonly type: 'RecordClientConnected';
  readonly data: { readonly client_id: number; readonly node_id: string; readonly session_id: string; readonly remote_addr: string };
};
export type RecordClientDisconnected = {
  readonly type: 'RecordClientDisconnected';
  readonly data: { readonly client_id: number; readonly node_id: string; readonly session_id: string; readonly reason: string };
};
export type ClientSessionCommand = RecordClientConnected | RecordClientDisconnected;

export interface ClientSessionState {
  /** The session that connected last and has not disconnected since, if any. */
  readonly current: { readonly nodeId: string; readonly sessionId: string } | null;
}

export const clientSessionDecider: Decider<ClientSessionState, ClientSessionCommand> = {
  initialState: () => ({ current: null }),
  evolve: (state, event: TypedStoredEvent): ClientSessionState => {
    switch (event.type) {
      case 'ClientConnected':
        return { current: { nodeId: event.data.node_id, sessionId: event.data.session_id } };
      case 'ClientDisconnected':
        return state.current?.sessionId === event.data.session_id ? { current: null } : state;
      default:
        return state;
    }
  },
  decide: (command): DomainEvent[] => {
    switch (command.type) {
      case 'RecordClientConnected':
        return [{ type: 'ClientConnected', data: { ...command.data } }];
      case 'RecordClientDisconnected':
        return [{ type: 'ClientDisconnected', data: { ...command.data } }];
    }
  },
};
