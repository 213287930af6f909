import type { ChangeBus } from '../../shared/contracts/notices.js';
import type { Db } from '../../shared/db/connect.js';
import { readCheckpoint } from './checkpoints.js';

export interface ProjectionWaiter {
  /**
   * Resolves true once the projection's checkpoint is >= position, false after timeoutMs.
   * Rejects only when the first checkpoint read fails; later poll failures are retried.
   */
  waitFor(position: number, timeoutMs: number): Promise<boolean>;
  /** Unsubscribes, stops polling and resolves every pending wait with false. */
  close(): void;
}

interface Pending {
  position: number;
  resolve: (reached: boolean) => void;
  timer: NodeJS.Timeout;
}

/**
 * Lets the API answer "read your writes": after appending at position P it waits until the read
 * models include P. `projection` notices give low latency; a poll of the checkpoint every pollMs
 * (one query for all pending waits) covers lost notices, so a wait can end late but never hang.
 */
export function createProjectionWaiter(opts: { db: Db; bus: ChangeBus; name: string; pollMs?: number }): ProjectionWaiter {
  const { db, bus, name } = opts;
  const pollMs = opts.pollMs ?? 100;
  const pending = new Set<Pending>();
  let reached = 0;
  let closed = false;
  let pollTimer: NodeJS.Timeout | undefined;
  let polling = false;

  const settle = (p: Pending, ok: boolean): void => {
    if (!pending.delete(p)) return;
    clearTimeout(p.timer);
    p.resolve(ok);
    if (pending.size === 0 && pollTimer) {
      clearTimeout(pollTimer);
      pollTimer = undefined;
    }
  };

  const advance = (position: number): void => {
    if (position <= reached) return;
    reached = position;
    for (const p of [...pending]) if (p.position <= reached) settle(p, true);
  };

  const schedulePoll = (): void => {
    if (closed || pollTimer || polling || pending.size === 0) return;
    pollTimer = setTimeout(() => {
      pollTimer = undefined;
      polling = true;
      readCheckpoint(db, name)
        .then(advance, () => undefined /* retried at the next tick; the wait's own timeout bounds it */)
        .finally(() => {
          polling = false;
          schedulePoll();
        });
    }, pollMs);
  };

  const unsubscribe = bus.subscribe((notice) => {
    if (notice.kind === 'projection' && notice.name === name) advance(notice.position);
  });

  return {
    async waitFor(position, timeoutMs) {
      if (closed) return false;
      if (position <= reached) return true;
      advance(await readCheckpoint(db, name));
      if (position <= reached) return true;
      if (closed) return false;
      return new Promise<boolean>((resolve) => {
        const p: Pending = { position, resolve, timer: setTimeout(() => settle(p, false), Math.max(0, timeoutMs)) };
        pending.add(p);
        schedulePoll();
      });
    },
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      for (const p of [...pending]) settle(p, false);
      if (pollTimer) clearTimeout(pollTimer);
      pollTimer = undefined;
    },
  };
}
