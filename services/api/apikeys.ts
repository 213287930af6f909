import { timingSafeEqual } from 'node:crypto';
import { apiKeyStream, hashApiKey } from '../../shared/domain/apikey/apikey.commands.js';
import type { EventStore } from '../../shared/eventstore/types.js';

/**
 * Which `tnx_` API keys (made by `tunnox ctl apikeys create`) are live, read from the event log
 * itself (the last event of `apikey.<apikey_id>`), not from a read model: a key works as soon as its
 * ApiKeyCreated is stored and stops within `ttlMs` of its ApiKeyRevoked, in either mode, whether a
 * projector runs or not. Answers are cached per key id for `ttlMs` (unknown ids too, so a flood of
 * made-up keys costs one log read per id and second), at most `maxEntries` of them.
 */
export interface ApiKeyDirectory {
  /** The key id when `key` is a live key, else null. Throws when the log cannot be read. */
  verify(keyId: string, key: string): Promise<boolean>;
}

interface Entry {
  expires: number;
  /** The live key's digest; null: no such key, or revoked. */
  digest: Promise<Buffer | null>;
}

export function eventLogApiKeys(store: EventStore, opts: { ttlMs?: number; maxEntries?: number; now?: () => number } = {}): ApiKeyDirectory {
  const ttlMs = opts.ttlMs ?? 1000;
  const maxEntries = opts.maxEntries ?? 10_000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, Entry>();

  async function load(keyId: string): Promise<Buffer | null> {
    const { event } = await store.readLastEvent(apiKeyStream(keyId));
    if (event?.type !== 'ApiKeyCreated') return null;
    const hash = (event.data as { key_hash?: unknown }).key_hash;
    return typeof hash === 'string' && /^[0-9a-f]{64}$/.test(hash) ? Buffer.from(hash, 'hex') : null;
  }

  function lookup(keyId: string): Promise<Buffer | null> {
    const t = now();
    const hit = cache.get(keyId);
    if (hit && hit.expires > t) return hit.digest;
    if (hit) cache.delete(keyId);
    if (cache.size >= maxEntries) {
      // Oldest first (Map keeps insertion order): drop a tenth, so a flood does not evict one by one.
      let n = Math.ceil(maxEntries / 10);
      for (const k of cache.keys()) {
        cache.delete(k);
        if (--n === 0) break;
      }
    }
    const digest = load(keyId);
    const entry: Entry = { expires: t + ttlMs, digest };
    cache.set(keyId, entry);
    // A failed read is not remembered: the next request tries the log again.
    digest.catch(() => {
      if (cache.get(keyId) === entry) cache.delete(keyId);
    });
    return digest;
  }

  return {
    async verify(keyId, key) {
      const digest = await lookup(keyId);
      const presented = Buffer.from(hashApiKey(key), 'hex');
      return digest !== null && timingSafeEqual(presented, digest);
    },
  };
}
