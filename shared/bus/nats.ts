import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { z } from 'zod';
import type { ChangeBus, ChangeNotice } from '../contracts/notices.js';
import { silentLogger, type Logger } from '../platform/logger.js';

const Position = z.number().int().nonnegative();

/** Incoming notices come from other processes: validate before any handler sees one. */
export const ChangeNoticeSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('client-config'), clientId: z.number().int().positive(), version: Position }),
  z.object({ kind: z.literal('public-mappings'), version: Position }),
  z.object({ kind: z.literal('projection'), name: z.string().min(1), position: Position }),
]);

/** Subject for a notice: `<prefix>.cfg.client.<id>`, `<prefix>.cfg.public`, `<prefix>.cfg.projection.<name>`. */
export function noticeSubject(prefix: string, notice: ChangeNotice): string {
  switch (notice.kind) {
    case 'client-config':
      return `${prefix}.cfg.client.${notice.clientId}`;
    case 'public-mappings':
      return `${prefix}.cfg.public`;
    case 'projection':
      // One subject token; the payload carries the exact name.
      return `${prefix}.cfg.projection.${notice.name.replace(/[\s.*>]/g, '_')}`;
  }
}

/**
 * ChangeBus over core NATS (cluster mode): fire-and-forget, at-most-once, which is enough because
 * receivers re-read the read models (a lost notice only delays). One NATS subscription on
 * `<prefix>.cfg.>` serves every local handler; it exists only while there is at least one.
 * The connection belongs to the caller: close() unsubscribes but leaves it open.
 */
export function createNatsBus(nc: NatsConnection, subjectPrefix = 'tunnox', logger: Logger = silentLogger()): ChangeBus {
  const log = logger.child({ component: 'change-bus' });
  const handlers = new Set<(notice: ChangeNotice) => void>();
  let sub: Subscription | null = null;
  let closed = false;

  const dispatch = (data: Uint8Array, subject: string): void => {
    let notice: ChangeNotice;
    try {
      const parsed = ChangeNoticeSchema.safeParse(JSON.parse(new TextDecoder().decode(data)));
      if (!parsed.success) {
        log.warn({ subject, issues: parsed.error.issues }, 'dropped malformed change notice');
        return;
      }
      notice = parsed.data;
    } catch (err) {
      log.warn({ subject, err }, 'dropped change notice that is not JSON');
      return;
    }
    for (const handler of [...handlers]) {
      if (!handlers.has(handler)) continue;
      try {
        handler(notice);
      } catch (err) {
        log.error({ err, notice }, 'change notice handler threw');
      }
    }
  };

  const listen = (): void => {
    if (sub || closed) return;
    sub = nc.subscribe(`${subjectPrefix}.cfg.>`, {
      callback: (err, msg) => {
        if (err) {
          log.error({ err }, 'change notice subscription failed');
          return;
        }
        dispatch(msg.data, msg.subject);
      },
    });
  };

  const unlisten = (): void => {
    sub?.unsubscribe();
    sub = null;
  };

  return {
    async publish(notice) {
      // Notices are hints; after close (shutdown) they are dropped rather than failing the caller.
      if (closed) return;
      nc.publish(noticeSubject(subjectPrefix, notice), JSON.stringify(notice));
    },
    subscribe(handler) {
      if (closed) return () => undefined;
      const wrapped = (notice: ChangeNotice): void => handler(notice);
      handlers.add(wrapped);
      listen();
      return () => {
        handlers.delete(wrapped);
        if (handlers.size === 0) unlisten();
      };
    },
    async close() {
      closed = true;
      handlers.clear();
      unlisten();
    },
  };
}
