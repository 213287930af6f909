import type { ApiDeps } from './deps.js';

export const DEFAULT_PROJECTION_TIMEOUT_MS = 5000;

/**
 * Read-your-writes: a command answers from the read model, so it first waits until the projector
 * has folded the command's event. If that takes longer than the timeout the command still
 * happened (the event is durable): routes then answer 202 Accepted with the new id and a
 * Location to poll, instead of a 201 body they cannot vouch for.
 */
export async function waitForProjection(deps: ApiDeps, position: number): Promise<boolean> {
  return deps.waiter.waitFor(position, deps.projectionTimeoutMs ?? DEFAULT_PROJECTION_TIMEOUT_MS);
}
