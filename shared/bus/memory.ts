import type { ChangeBus, ChangeNotice } from '../contracts/notices.js';
import { silentLogger, type Logger } from '../platform/logger.js';

/**
 * In-process ChangeBus for standalone mode (one process runs edge, API and projector). Delivery is
 * asynchronous, like NATS: publish never runs a handler on the publisher's stack. After close(),
 * publish is a no-op: notices are hints, and shutdown order between publishers and the bus varies.
 */
export function createMemoryBus(logger: Logger = silentLogger()): ChangeBus {
  const handlers = new Set<(notice: ChangeNotice) => void>();
  let closed = false;

  return {
    async publish(notice) {
      if (closed) return;
      const targets = [...handlers];
      queueMicrotask(() => {
        for (const handler of targets) {
          // Unsubscribed between publish and delivery: do not deliver.
          if (!handlers.has(handler)) continue;
          try {
            handler(notice);
          } catch (err) {
            logger.error({ err, notice }, 'change notice handler threw');
          }
        }
      });
    },
    subscribe(handler) {
      if (closed) return () => undefined;
      // Wrap so the same function subscribed twice gets two independent subscriptions.
      const wrapped = (notice: ChangeNotice): void => handler(notice);
      handlers.add(wrapped);
      return () => {
        handlers.delete(wrapped);
      };
    },
    async close() {
      closed = true;
      handlers.clear();
    },
  };
}
