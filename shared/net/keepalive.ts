
/**
 * Idle time before the kernel starts TCP keepalive probes on a connection. Keepalive finds peers
 * whose host vanished (powered off, NAT state dropped, a cable pulled): their kernel no longer
 * answers, so the connection errors instead of staying open for ever. It cannot find a peer
 * process that is alive but silent (SIGSTOP, a hung event loop): its kernel still answers the
 * probes. Control connections have application heartbeats with a deadline for that
 * (shared/net/control.ts); keepalive is the floor under every other socket (tunnel halves,
 * visitors, local targets, the bridge's accepted connections).
 */
export const TCP_KEEPALIVE_DELAY_MS = 15_000;

/** Turns on TCP keepalive (SO_KEEPALIVE, first probe after `delayMs` idle). */
export function keepAlive(socket: { setKeepAlive(enable?: boolean, initialDelay?: number): unknown }, delayMs = TCP_KEEPALIVE_DELAY_MS): void {
  socket.setKeepAlive(true, delayMs);
}

/** The options for net.createServer / net.connect that turn keepalive on from the start. */
export const KEEPALIVE_OPTIONS = { keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_DELAY_MS } as const;
