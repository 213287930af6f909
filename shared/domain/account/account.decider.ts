import type { z } from 'zod';
import type { DomainEvent, Quota as QuotaSchema, TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';
import { DomainError } from '../../platform/errors.js';
import { DOMAIN_ERRORS } from '../errors.js';

export type Quota = z.infer<typeof QuotaSchema>;
export type QuotaTier = Quota['tier'];
export type SlotKind = 'client' | 'mapping';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * The seed's tiers (section "配额等级"), plus `unlimited`, the self-hosted default. The seed names
 * clients, mappings, bandwidth and monthly traffic per tier; active mappings and connections per
 * mapping follow its API example (pro: 10 and 100).
 */
export const TIERS: Record<Exclude<QuotaTier, 'custom'>, Quota> = {
  unlimited: {
    tier: 'unlimited',
    max_clients: null,
    max_mappings: null,
    max_active_mappings: null,
    max_connections_per_mapping: null,
    total_bandwidth_limit: null,
    monthly_traffic_limit: null,
  },
  free: {
    tier: 'free',
    max_clients: 1,
    max_mappings: 1,
    max_active_mappings: 1,
    max_connections_per_mapping: 10,
    total_bandwidth_limit: 512 * 1024,
    monthly_traffic_limit: GiB,
  },
  pro: {
    tier: 'pro',
    max_clients: 10,
    max_mappings: 50,
    max_active_mappings: 10,
    max_connections_per_mapping: 100,
    total_bandwidth_limit: 10 * MiB,
    monthly_traffic_limit: 500 * GiB,
  },
  enterprise: {
    tier: 'enterprise',
    max_clients: null,
    max_mappings: null,
    max_active_mappings: null,
    max_connections_per_mapping: null,
    total_bandwidth_limit: 100 * MiB,
    monthly_traffic_limit: null,
  },
};

/**
 * However unlimited the quota, one user holds at most this many clients and as many mappings: the
 * account's events carry the held ids, and must stay well inside a NATS message.
 */
export const HARD_SLOT_CAP = 10_000;

export interface AccountState {
  /** False until the account's first event (users created before quotas existed, or a crash). */
  readonly opened: boolean;
  readonly quota: Quota;
  readonly clients: readonly number[];
  readonly mappings: readonly number[];
}

export type SetQuota = { readonly type: 'SetQuota'; readonly data: { readonly user_id: number; readonly quota: Quota } };
export type TakeSlot = {
  readonly type: 'TakeSlot';
  readonly data: { readonly user_id: number; readonly kind: SlotKind; readonly id: number; readonly defaultQuota: Quota };
};
export type FreeSlot = { readonly type: 'FreeSlot'; readonly data: { readonly user_id: number; readonly kind: SlotKind; readonly id: number } };
export type AccountCommand = SetQuota | TakeSlot | FreeSlot;

function held(state: AccountState, kind: SlotKind): readonly number[] {
  return kind === 'client' ? state.clients : state.mappings;
}

/** The held ids of both kinds, with `kind`'s replaced by `next` (fresh arrays: events own theirs). */
function holdings(state: AccountState, kind: SlotKind, next: number[]): { clients: number[]; mappings: number[] } {
  return { clients: kind === 'client' ? next : [...state.clients], mappings: kind === 'mapping' ? next : [...state.mappings] };
}

function limitOf(quota: Quota, kind: SlotKind): number | null {
  return kind === 'client' ? quota.max_clients : quota.max_mappings;
}

/**
 * Stream `account.<user_id>`. Invariant the command service relies on (it folds only the last
 * event): every event carries the whole state.
 */
export const accountDecider: Decider<AccountState, AccountCommand> = {
  initialState: () => ({ opened: false, quota: TIERS.unlimited, clients: [], mappings: [] }),
  evolve: (state, event: TypedStoredEvent): AccountState => {
    switch (event.type) {
      case 'AccountQuotaSet':
      case 'AccountSlotTaken':
      case 'AccountSlotFreed':
        return { opened: true, quota: event.data.quota, clients: event.data.clients, mappings: event.data.mappings };
      default:
        return state;
    }
  },
  decide: (command, state): DomainEvent[] => {
    const { user_id } = command.data;
    switch (command.type) {
      case 'SetQuota': {
        if (state.opened && JSON.stringify(state.quota) === JSON.stringify(command.data.quota)) return [];
        return [{ type: 'AccountQuotaSet', data: { user_id, quota: command.data.quota, clients: [...state.clients], mappings: [...state.mappings] } }];
      }
      case 'TakeSlot': {
        const { kind, id } = command.data;
        const quota = state.opened ? state.quota : command.data.defaultQuota;
        const ids = held(state, kind);
        // Taking a slot the id already holds is a retry of a command that already succeeded.
        if (ids.includes(id)) return [];
        const limit = limitOf(quota, kind);
        if (limit !== null && ids.length >= limit) {
          throw new DomainError(
            DOMAIN_ERRORS.quotaExceeded,
            `user ${user_id} already has ${ids.length} ${kind}s, the most its quota (${quota.tier}) allows (max_${kind}s: ${limit})`,
            { details: { field: `max_${kind}s` } },
          );
        }
        if (ids.length >= HARD_SLOT_CAP) {
          throw new DomainError(DOMAIN_ERRORS.quotaExceeded, `user ${user_id} already has ${ids.length} ${kind}s, the most any user may hold`, {
            details: { field: `max_${kind}s` },
          });
        }
        return [{ type: 'AccountSlotTaken', data: { user_id, quota, ...holdings(state, kind, [...ids, id]), kind, id } }];
      }
      case 'FreeSlot': {
        const { kind, id } = command.data;
        // Freeing a slot nobody holds is a retried free (a cascade may run twice).
        if (!held(state, kind).includes(id)) return [];
        const next = held(state, kind).filter((x) => x !== id);
        return [{ type: 'AccountSlotFreed', data: { user_id, quota: state.quota, ...holdings(state, kind, next), kind, id } }];
      }
    }
  },
};
