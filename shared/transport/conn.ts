import type { Duplex } from 'node:stream';

/**
 * One connection of any transport, as the edge and the agent use it: a byte Duplex with TCP
 * semantics (allowHalfOpen: end() is a FIN that leaves the other direction flowing; destroy()
 * before both directions ended is a reset) plus the few socket calls they make. A net.Socket and
 * a tls.TLSSocket are Conns as they are; WsConn (ws.ts) is one over a WebSocket.
 */
export type Conn = Duplex & {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  setNoDelay(noDelay?: boolean): unknown;
  setKeepAlive(enable?: boolean, initialDelay?: number): unknown;
};

/** The schemes an agent may dial: `tls` (HOST:PORT with no scheme), `tcp`, `ws`, `wss`. */
export type Scheme = 'tcp' | 'tls' | 'ws' | 'wss';

/** Accepts connections of one or more transports and hands each one, as a Conn, to its handler. */
export interface Listener {
  /** The bound port (a listener asked for port 0 gets one). */
  readonly port: number;
  /** Stops accepting; resolves once every connection it accepted has closed. */
  close(): Promise<void>;
  /** Destroys the connections it holds that were not handed over yet (still being classified). */
  destroyPending(): void;
}

/** A dial in progress: abort() destroys whatever socket it holds (`conn` then rejects). */
export interface PendingDial {
  readonly conn: Promise<Conn>;
  abort(): void;
}

/**
 * Opens connections to edges by URL (the scheme picks the transport): each resolves with the
 * transport connected and verified, ready for the first frame. EdgeDialer (dial.ts) is the one.
 */
export interface Dialer {
  dial(url: import('./url.js').EdgeUrl, timeoutMs: number): PendingDial;
}
