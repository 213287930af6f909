import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../shared/platform/logger.js';
import type { EdgeView, MappingState as MappingRow } from './view/view.js';
import type { TunnelBroker } from './tunnels.js';
import { listen } from '../../shared/net/listen.js';
import { keepAlive } from '../../shared/net/keepalive.js';
import { resetStream } from '../../shared/net/pipe.js';
import { WireErrorCode } from '../../shared/wire/codes.js';
import type { EdgeMetrics } from './metrics.js';
import { KeyedRateLimiter, type LogRationer } from './rate-limit.js';

interface PublicListener {
  mapping: MappingRow;
  readonly server: Server;
}

export interface PublicListenersOptions {
  view: EdgeView;
  logger: Logger;
  host: string;
  broker: TunnelBroker;
  /**
   * New visitor connections per source IP, over all public ports of this edge: a token bucket
   * refilled at `perSecond` holding at most `burst`. A visitor over it is reset at once, before
   * any tunnel is asked for. perSecond 0 = no limit.
   */
  visitorRate?: { perSecond: number; burst: number };
  /** Where refusals are logged (rationed). */
  warnings?: LogRationer;
  metrics?: EdgeMetrics;
}

/**
 * Listen backlog of a public port (the kernel caps it at net.core.somaxconn): a burst of visitors
 * beyond Node's default 511 would otherwise overflow the accept queue, whose dropped handshakes
 * the visitors see as resets or 1 s SYN retries before the edge could even refuse them.
 */
const PUBLIC_BACKLOG = 4096;

/** Default per-IP visitor rate: 100 new connections a second, bursts of 500. */
export const DEFAULT_VISITOR_RATE = { perSecond: 100, burst: 500 };

/**
 * One TCP listener per enabled public mapping, reconciled against the edge view whenever a
 * public mapping changes in it. Reconciles never overlap; changes arriving during one are
 * folded into a single follow-up run.
 *
 * Removing a mapping closes its listener and also tears down its established tunnels: deleting
 * (or disabling) a mapping revokes access, like a firewall rule that also drops its flows.
 */
export class PublicListeners {
  private readonly listeners = new Map<number, PublicListener>();
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly visitors: KeyedRateLimiter | undefined;

  constructor(private readonly o: PublicListenersOptions) {
    const rate = o.visitorRate ?? DEFAULT_VISITOR_RATE;
    this.visitors = rate.perSecond > 0 ? new KeyedRateLimiter(rate.perSecond * 60, Math.max(1, rate.burst)) : undefined;
  }

  /** Source IPs the visitor rate limiter remembers now (bounded; for tests). */
  get rateLimitedKeys(): number {
    return this.visitors?.size ?? 0;
  }

  get count(): number {
    return this.listeners.size;
  }

  /** Brings the listeners in line with the edge view. Never rejects (errors are logged). */
  reconcile(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.reconcileOnce().catch((err: unknown) => this.o.logger.error({ err }, 'public listener reconcile failed; the next notice retries'));
      } while (this.again && !this.stopped);
      this.running = undefined;
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    for (const id of [...this.listeners.keys()]) this.close(id, 'edge shutting down');
  }

  /**
   * Drain: closes every public port (no new visitors) but leaves the tunnels of its visitors
   * running; later reconciles open nothing. stop() afterwards only has nothing left to close.
   */
  async stopAccepting(): Promise<void> {
    this.stopped = true;
    await this.running;
    for (const [id, l] of [...this.listeners]) {
      this.listeners.delete(id);
      l.server.close();
      this.o.logger.info({ mappingId: id, port: l.mapping.public_port }, 'public listener closed: edge draining');
    }
  }

  private async reconcileOnce(): Promise<void> {
    const rows = this.o.view.publicMappings();
    if (this.stopped) return;
    const wanted = new Map(rows.map((r) => [r.mapping_id, r]));
    for (const [id, l] of this.listeners) {
      const row = wanted.get(id);
      if (!row) this.close(id, 'mapping removed');
      else if (row.public_port !== l.mapping.public_port || row.target_client_id !== l.mapping.target_client_id) this.close(id, 'mapping changed');
      else l.mapping = row; // same port and target: keep the listener, pick up the new details
    }
    await Promise.all(rows.filter((r) => !this.listeners.has(r.mapping_id)).map((r) => this.open(r)));
  }

  private async open(mapping: MappingRow): Promise<void> {
    const log = this.o.logger.child({ mappingId: mapping.mapping_id });
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    const listener: PublicListener = { mapping, server };
    server.on('connection', (visitor: Socket) => {
      const ip = visitor.remoteAddress ?? '?';
      if (this.visitors && !this.visitors.take(ip)) {
        visitor.on('error', () => undefined);
        resetStream(visitor);
        this.o.metrics?.tunnelFailed(WireErrorCode.TunnelRateLimited);
        const reason = 'visitor refused: source IP over its rate of new connections';
        if (this.o.warnings) this.o.warnings.warn(reason, { mappingId: listener.mapping.mapping_id, remoteAddr: ip }, reason);
        return;
      }
      visitor.setNoDelay(true);
      keepAlive(visitor);
      this.o.broker.openForVisitor(visitor, listener.mapping, randomBytes(16).toString('hex'));
    });
    try {
      await listen(server, { host: this.o.host, port: mapping.public_port!, backlog: PUBLIC_BACKLOG });
    } catch (err) {
      // Typically EADDRINUSE (another process, or an outgoing connection's ephemeral port): retry
      // soon rather than waiting for the next notice or the periodic reconcile.
      log.error({ err, port: mapping.public_port }, 'could not open the public port; retrying in 2 s');
      if (!this.stopped) setTimeout(() => void this.reconcile(), 2_000).unref();
      return;
    }
    server.on('error', (err) => log.error({ err }, 'public listener error'));
    if (this.stopped || this.listeners.has(mapping.mapping_id)) {
      server.close();
      return;
    }
    this.listeners.set(mapping.mapping_id, listener);
    log.info({ port: mapping.public_port, host: this.o.host }, 'public listener open');
  }

  private close(mappingId: number, reason: string): void {
    const l = this.listeners.get(mappingId);
    if (!l) return;
    this.listeners.delete(mappingId);
    l.server.close(); // stops accepting at once; returns before existing connections end
    this.o.broker.closeMapping(mappingId);
    this.o.logger.info({ mappingId, port: l.mapping.public_port, reason }, 'public listener closed');
  }
}
