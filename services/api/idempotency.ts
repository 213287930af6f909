import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Db } from '../../shared/db/connect.js';
import type { IdempotencyScope } from '../../shared/eventstore/command.js';
import { requestKeyId } from './auth.js';
import { problem, sendProblem } from './errors.js';
import { idempotencyScopes } from './request-context.js';

/**
 * `Idempotency-Key` on POST requests (the IETF httpapi draft's header; Stripe's semantics).
 *
 * - The first request with a key claims it (a row in api_idempotency, leased while it runs) and
 *   runs; its response (status, Location, ETag, body) is kept for `ttlMs` (default 24 h).
 * - The same key with the same method, URL and body gets that response again (with
 *   `Idempotent-Replayed: true`) and nothing is appended a second time. With a different request
 *   it gets 422 TNX_IDEMPOTENCY_KEY_REUSED; while the first is still running, 409
 *   TNX_IDEMPOTENCY_IN_PROGRESS with Retry-After.
 * - The key also decides the envelope ids of the events the command appends (see
 *   shared/eventstore/command.ts), so a request that crashed after its append and before its
 *   response is re-run on retry (once its lease has expired) against the store's dedup: the
 *   appends come back as duplicates with the original events, and the response is the one the
 *   first attempt would have given. PostgreSQL dedups envelope ids forever; JetStream within its
 *   stream's duplicate window (2 minutes by default): a retry of a crashed request later than that
 *   may append again.
 * - A secret the command generates (an auth code) is kept with the claim before the command uses
 *   it, so that re-run hands out the code whose hash the stored event holds.
 * - A 5xx answer keeps the claim but ends its lease: the retry re-runs at once, deduplicated.
 *
 * Nothing stored is readable without the key: the row id is a hash of (API key id, key), and the
 * kept body and secrets are AES-256-GCM encrypted with a key derived (HKDF) from the
 * Idempotency-Key. Keys are scoped per API key: two integrators cannot collide or read each other's.
 */
export interface IdempotencyOptions {
  /** How long a key is remembered. Default 24 h. */
  ttlMs?: number;
  /** How long a running request holds its key before a retry may take it over. Default 60 s. */
  leaseMs?: number;
}

export const IDEMPOTENCY_ERRORS = {
  invalidKey: 'TNX_IDEMPOTENCY_KEY_INVALID',
  reused: 'TNX_IDEMPOTENCY_KEY_REUSED',
  inProgress: 'TNX_IDEMPOTENCY_IN_PROGRESS',
} as const;

const HEADER = 'idempotency-key';
/** Visible ASCII, 1–255 characters: UUIDs, ULIDs and the like; no spaces or control bytes. */
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
const KEPT_HEADERS = ['content-type', 'location', 'etag'] as const;
const SWEEP_EVERY_MS = 60_000;

interface Claim {
  readonly id: string;
  readonly key: Buffer;
  readonly scope: IdempotencyScope;
}

const claims = new WeakMap<FastifyRequest, Claim>();

function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** JSON with sorted object keys, so a body's fingerprint does not depend on key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function seal(key: Buffer, plain: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]).toString('base64');
}

function open(key: Buffer, sealed: string): string {
  const raw = Buffer.from(sealed, 'base64');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
}

export function registerIdempotency(app: FastifyInstance, db: Db, o: IdempotencyOptions = {}): void {
  const ttlMs = o.ttlMs ?? 24 * 3600_000;
  const leaseMs = o.leaseMs ?? 60_000;
  let lastSweep = 0;

  const sweep = async (now: number): Promise<void> => {
    if (now - lastSweep < SWEEP_EVERY_MS) return;
    lastSweep = now;
    await db.deleteFrom('api_idempotency').where('created_at', '<', new Date(now - ttlMs)).execute();
  };

  const begin = (request: FastifyRequest, id: string, key: Buffer, sealedSecrets: string | null): void => {
    const secrets = new Map<string, string>(sealedSecrets ? Object.entries(JSON.parse(open(key, sealedSecrets)) as Record<string, string>) : []);
    const scope: IdempotencyScope = {
      seed: id,
      appended: new Map(),
      secret: async (name, make) => {
        const known = secrets.get(name);
        if (known !== undefined) return known;
        const value = make();
        secrets.set(name, value);
        // Durable before the command uses it: a re-run after a crash must find it.
        await db
          .updateTable('api_idempotency')
          .set({ secrets: seal(key, JSON.stringify(Object.fromEntries(secrets))) })
          .where('id', '=', id)
          .execute();
        return value;
      },
    };
    claims.set(request, { id, key, scope });
    idempotencyScopes.set(request, scope);
  };

  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.method !== 'POST') return undefined;
    const header = request.headers[HEADER];
    if (header === undefined) return undefined;
    if (typeof header !== 'string' || !KEY_PATTERN.test(header)) {
      return sendProblem(
        reply,
        problem(400, IDEMPOTENCY_ERRORS.invalidKey, 'Idempotency-Key must be 1–255 visible ASCII characters (a UUID, say), sent once', {
          field: 'Idempotency-Key',
        }),
      );
    }
    const keyId = requestKeyId(request);
    const id = sha256hex(`tunnox-idempotency-id-v1|${keyId}|${header}`);
    const key = Buffer.from(hkdfSync('sha256', header, keyId, 'tunnox-idempotency-v1', 32));
    const fingerprint = sha256hex(`${request.method} ${request.url}\n${canonical(request.body ?? null)}`);
    const now = Date.now();
    await sweep(now);

    for (let attempt = 0; attempt < 3; attempt++) {
      const inserted = await db
        .insertInto('api_idempotency')
        .values({ id, fingerprint, state: 'pending', lease_until: new Date(now + leaseMs), secrets: null, status: null, headers: null, body: null })
        .onConflict((c) => c.column('id').doNothing())
        .returning('id')
        .executeTakeFirst();
      if (inserted) {
        begin(request, id, key, null);
        return undefined;
      }
      const row = await db.selectFrom('api_idempotency').selectAll().where('id', '=', id).executeTakeFirst();
      if (!row) continue; // swept or released meanwhile: claim again
      if (new Date(row.created_at).getTime() < now - ttlMs) {
        await db.deleteFrom('api_idempotency').where('id', '=', id).where('created_at', '=', row.created_at).execute();
        continue;
      }
      if (row.fingerprint !== fingerprint) {
        return sendProblem(
          reply,
          problem(422, IDEMPOTENCY_ERRORS.reused, 'this Idempotency-Key was used for a different request (method, URL or body); use a new key', {
            field: 'Idempotency-Key',
          }),
        );
      }
      if (row.state === 'done' && row.status !== null && row.body !== null) {
        const headers = JSON.parse(row.headers ?? '{}') as Record<string, string>;
        reply.code(row.status).headers(headers).header('idempotent-replayed', 'true');
        return reply.send(open(key, row.body));
      }
      const leaseUntil = new Date(row.lease_until);
      if (leaseUntil.getTime() > now) {
        const retryAfter = Math.max(1, Math.ceil((leaseUntil.getTime() - now) / 1000));
        return sendProblem(
          reply.header('retry-after', String(retryAfter)),
          problem(409, IDEMPOTENCY_ERRORS.inProgress, 'a request with this Idempotency-Key is still running; retry later'),
        );
      }
      // The first attempt died (or answered 5xx) without an answer: take the claim over and re-run.
      const taken = await db
        .updateTable('api_idempotency')
        .set({ lease_until: new Date(now + leaseMs) })
        .where('id', '=', id)
        .where('lease_until', '=', leaseUntil)
        .returning('id')
        .executeTakeFirst();
      if (taken) {
        begin(request, id, key, row.secrets);
        return undefined;
      }
    }
    return sendProblem(reply, problem(409, IDEMPOTENCY_ERRORS.inProgress, 'a request with this Idempotency-Key is still running; retry later'));
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const claim = claims.get(request);
    if (!claim) return payload;
    claims.delete(request);
    try {
      if (reply.statusCode >= 500 || typeof payload !== 'string') {
        // No answer worth keeping (or one we cannot keep): a retry may re-run at once.
        await db.updateTable('api_idempotency').set({ lease_until: new Date(0) }).where('id', '=', claim.id).execute();
        return payload;
      }
      const headers: Record<string, string> = {};
      for (const h of KEPT_HEADERS) {
        const v = reply.getHeader(h);
        if (v !== undefined) headers[h] = String(v);
      }
      await db
        .updateTable('api_idempotency')
        .set({ state: 'done', status: reply.statusCode, headers: JSON.stringify(headers), body: seal(claim.key, payload) })
        .where('id', '=', claim.id)
        .execute();
    } catch (err) {
      // The answer still goes out; the claim's lease runs out and a retry re-runs deduplicated.
      request.log.error({ err }, 'could not record the Idempotency-Key outcome');
    }
    return payload;
  });
}
