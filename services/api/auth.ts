import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Actor } from '../../shared/contracts/envelope.js';
import type { CommandMetadata } from '../../shared/eventstore/command.js';
import { parseApiKeyId } from '../../shared/domain/apikey/apikey.commands.js';
import type { ApiKeyDirectory } from './apikeys.js';
import { API_ERRORS, problem, sendProblem } from './errors.js';
import { authenticatedKey as authenticated, idempotencyScopes } from './request-context.js';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A non-secret, stable name for an API key (audit actor id): the first 12 hex of its sha256. */
export function apiKeyId(key: string): string {
  return sha256(key).toString('hex').slice(0, 12);
}

/**
 * `Authorization: Bearer <key>` against the configured keys and, for a key in the `tnx_` format,
 * the keys of the event log (`tunnox ctl apikeys`, see apikeys.ts). Configured keys are compared by
 * digest, so every comparison has the same length, and all of them are compared, so timing says
 * nothing about which key (or how much of one) matched. A log key's actor id is its key id; a
 * configured key's is apiKeyId. When the log cannot be read the answer is 503, never a pass.
 */
export function createAuthHook(apiKeys: readonly string[], directory?: ApiKeyDirectory) {
  const keys = apiKeys.map((k) => ({ digest: sha256(k), id: apiKeyId(k) }));
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const header = request.headers.authorization;
    const match = header === undefined ? null : /^Bearer ([^\s]+)$/i.exec(header.trim());
    const token = match?.[1];
    if (token) {
      const presented = sha256(token);
      let found: string | null = null;
      for (const k of keys) if (timingSafeEqual(presented, k.digest) && found === null) found = k.id;
      const logKeyId = found === null && directory ? parseApiKeyId(token) : null;
      if (logKeyId !== null) {
        try {
          if (await directory!.verify(logKeyId, token)) found = logKeyId;
        } catch (err) {
          request.log.error({ err }, 'API key lookup failed');
          return sendProblem(reply, problem(503, API_ERRORS.storeUnavailable, 'the event log is unavailable; retry later'));
        }
      }
      if (found !== null) {
        authenticated.set(request, found);
        return undefined;
      }
    }
    // Returning the reply tells fastify the hook answered; the route (and body validation) never runs.
    return sendProblem(
      reply.header('www-authenticate', 'Bearer realm="tunnox"'),
      problem(401, API_ERRORS.unauthorized, header === undefined ? 'missing Authorization: Bearer <api key>' : 'invalid API key'),
    );
  };
}

/** The id (apiKeyId) of the key that authenticated `request`; throws if none did. */
export function requestKeyId(request: FastifyRequest): string {
  const keyId = authenticated.get(request);
  if (keyId === undefined) throw new Error('requestKeyId called on an unauthenticated request');
  return keyId;
}

/** Envelope metadata for a command issued by an authenticated request. */
export function commandMeta(request: FastifyRequest): CommandMetadata {
  const keyId = authenticated.get(request);
  if (keyId === undefined) throw new Error('commandMeta called on an unauthenticated request');
  const actor: Actor = { kind: 'api_key', id: keyId };
  const traceparent = request.headers['traceparent'];
  const idempotency = idempotencyScopes.get(request);
  return {
    actor,
    ...(idempotency ? { idempotency } : {}),
    correlationId: request.id,
    ...(typeof traceparent === 'string' ? { traceparent } : {}),
  };
}
