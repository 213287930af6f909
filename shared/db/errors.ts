/**
 * True for failures that say "PostgreSQL is not reachable or not accepting work right now" (the
 * same statement retried later may well succeed), as opposed to errors in the statement or data.
 * SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57P operator intervention
 * (admin/crash shutdown, cannot connect now); plus socket-level failures that carry no SQLSTATE.
 */
export function isTransientDbError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (/^(08|53|57P)/.test(code)) return true;
      // ALTER DATABASE ... ALLOW_CONNECTIONS false (maintenance): refused now, accepted later.
      if (code === '55000' && /not currently accepting connections/.test(e instanceof Error ? e.message : '')) return true;
      if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'TNX_EVENTSTORE_UNAVAILABLE'].includes(code)) return true;
    }
    const message = e instanceof Error ? e.message : '';
    if (/Connection terminated|connection timeout|Client has encountered a connection error/i.test(message)) return true;
  }
  return false;
}
