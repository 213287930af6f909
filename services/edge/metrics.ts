/**
 * What the edge reports as it runs, for the process's metrics (services/cli/metrics.ts turns these
 * calls into Prometheus series). Plain calls, no metrics library here: an edge without it (tests,
 * embedding) passes nothing and pays nothing. Gauges (agents connected, public listeners) are read
 * from RunningEdge.stats() at scrape time instead.
 */

/** Where a tunnel's visitor side came from: a source agent, a public port, or another edge's bridge. */
export type TunnelKind = 'client' | 'public' | 'bridge';

export interface EdgeMetrics {
  /** Both halves paired (or the bridge stream opened): the byte pump starts. */
  tunnelOpened(kind: TunnelKind): void;
  /**
   * The pump finished: bytes it copied from the visitor side to the target side and back. Counted
   * once, at the end of the tunnel (shared/net/pipe.ts returns the counts then).
   */
  tunnelClosed(kind: TunnelKind, bytesToTarget: number, bytesToVisitor: number): void;
  /** A tunnel with a known mapping that never started (target offline, timeout, refused by the target...). */
  tunnelFailed(code: string): void;
  /** An agent answered a config push (or it timed out): from sending it to the answer. */
  configPushAnswered(kind: 'full' | 'delta', outcome: 'applied' | 'not_applied', seconds: number): void;
}
