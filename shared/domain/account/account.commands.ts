import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { accountDecider, TIERS, type AccountState, type Quota, type QuotaTier, type SlotKind } from './account.decider.js';

export function accountStream(userId: number): string {
  return streamName(AGGREGATES.account, userId);
}

/**
 * Every create of a user's client or mapping contends on its account stream. Each lost race means
 * another create of the same user went through, so the bound is generous, and retries back off
 * with jitter so a burst spreads out instead of colliding again at once.
 */
const SLOT_RETRIES = 200;
const SLOT_BACKOFF_MS = 2;

export async function loadAccount(store: EventStore, userId: number): Promise<AccountState & { version: number }> {
  const { state, version } = await loadAggregate(store, accountStream(userId), accountDecider, true);
  return { ...state, version };
}

/** The quota a user gets: a named tier, with any limits overridden (then `custom`). */
export function resolveQuota(tier: Exclude<QuotaTier, 'custom'>, overrides: Partial<Omit<Quota, 'tier'>>): Quota {
  const quota: Quota = { ...TIERS[tier] };
  let changed = false;
  for (const [k, v] of Object.entries(overrides) as [Exclude<keyof Quota, 'tier'>, number | null | undefined][]) {
    if (v === undefined || quota[k] === v) continue;
    quota[k] = v;
    changed = true;
  }
  return changed ? { ...quota, tier: 'custom' } : quota;
}

export async function setQuota(store: EventStore, input: { userId: number; quota: Quota }, meta: CommandMetadata): Promise<{ position: number; version: number }> {
  const res = await handleCommand(
    store,
    accountStream(input.userId),
    accountDecider,
    { type: 'SetQuota', data: { user_id: input.userId, quota: input.quota } },
    meta,
    { lastEventOnly: true, maxRetries: SLOT_RETRIES, retryBackoffMs: SLOT_BACKOFF_MS },
  );
  return { position: res.position, version: res.version };
}

/**
 * Takes one of the user's client or mapping slots for `id`, or throws TNX_QUOTA_EXCEEDED. An
 * account that has no event yet (a user from before quotas) starts on `defaultQuota`.
 */
export async function takeSlot(
  store: EventStore,
  input: { userId: number; kind: SlotKind; id: number; defaultQuota: Quota },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  const res = await handleCommand(
    store,
    accountStream(input.userId),
    accountDecider,
    { type: 'TakeSlot', data: { user_id: input.userId, kind: input.kind, id: input.id, defaultQuota: input.defaultQuota } },
    meta,
    { lastEventOnly: true, maxRetries: SLOT_RETRIES, retryBackoffMs: SLOT_BACKOFF_MS },
  );
  return { position: res.position };
}

/** Frees the slot `id` holds (nothing if it holds none: a repeated cascade). */
export async function freeSlot(store: EventStore, input: { userId: number; kind: SlotKind; id: number }, meta: CommandMetadata): Promise<{ position: number }> {
  const res = await handleCommand(
    store,
    accountStream(input.userId),
    accountDecider,
    { type: 'FreeSlot', data: { user_id: input.userId, kind: input.kind, id: input.id } },
    meta,
    { lastEventOnly: true, maxRetries: SLOT_RETRIES, retryBackoffMs: SLOT_BACKOFF_MS },
  );
  return { position: res.position };
}
