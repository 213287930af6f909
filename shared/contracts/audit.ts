import type { StoredEvent } from './envelope.js';
import { AGGREGATES, SKIP_AGGREGATE } from './events.js';

/*
 * What operators and integrators see of the event log (GET /api/v1/events, `tunnox ctl events
 * tail`, `tunnox ctl state`): the envelope as stored and the payload with every secret-like field
 * replaced by REDACTED.
 */

export const REDACTED = '[redacted]';

/**
 * The redaction rule, by field name (at any depth of the payload). A name is split into words at
 * `_`, `-`, `.` and camel humps, compared lower-case. It is secret-like when
 * - a word contains secret, password, passwd, passphrase, token, credential, private or signature
 *   (`secret_key`, `password_hash`, `sessionToken`, `clientSecrets`);
 * - or a word is key, hash or salt, plural included (`auth_code_hash`, `api_key`, `APIKey`, `keys`);
 * - or the words auth and code follow each other (`auth_code`: a plain auth code no event holds).
 * `mapping_id`, `public_port`, `client_name` are not; `key_count` is (the rule errs on the side of
 * hiding). One exception: a name whose last word is `generation` (`secret_generation`, the
 * counter a mapping's secret is derived from) numbers a secret and is never one itself. By name rather than a list per event type, so it also covers event types and fields this
 * build does not know (written by a newer build during a rolling upgrade).
 */
const SECRET_PARTS = ['secret', 'password', 'passwd', 'passphrase', 'token', 'credential', 'private', 'signature'];
const SECRET_WORDS = new Set(['key', 'hash', 'salt']);

function wordsOf(name: string): string[] {
  return name
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

function isSecretWord(w: string): boolean {
  if (SECRET_PARTS.some((part) => w.includes(part))) return true;
  return SECRET_WORDS.has(w) || (w.endsWith('s') && SECRET_WORDS.has(w.slice(0, -1))) || (w.endsWith('es') && SECRET_WORDS.has(w.slice(0, -2)));
}

export function isSecretField(name: string): boolean {
  const words = wordsOf(name);
  if (words.length > 1 && words[words.length - 1] === 'generation') return false;
  return words.some((w, i) => isSecretWord(w) || (w === 'auth' && words[i + 1] === 'code'));
}

/**
 * A copy of `data` with the value of every secret-like field (isSecretField), at any depth, replaced
 * by REDACTED, whatever its type; `redacted` lists their paths (`secret_key`, `a.b[0].token`).
 * `data` itself is never changed.
 */
export function redactSecrets(data: unknown): { data: unknown; redacted: string[] } {
  const redacted: string[] = [];
  const walk = (value: unknown, path: string): unknown => {
    if (Array.isArray(value)) return value.map((v, i) => walk(v, `${path}[${i}]`));
    if (typeof value !== 'object' || value === null) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const p = path ? `${path}.${k}` : k;
      if (isSecretField(k)) {
        out[k] = REDACTED;
        redacted.push(p);
      } else {
        out[k] = walk(v, p);
      }
    }
    return out;
  };
  return { data: walk(data, ''), redacted };
}

/**
 * Every aggregate type with a stream of its own (the first segment of a stream name): the domain's
 * AGGREGATES, the client sessions (shared/domain/client) and the operators' skips.
 */
export function auditAggregates(): readonly string[] {
  return [...new Set([...Object.values(AGGREGATES), 'client-session', SKIP_AGGREGATE])].sort();
}

export interface AggregateRef {
  aggregate: string;
  id: string;
  /** The event-store stream, `mapping.1001`. */
  stream: string;
}

/**
 * `mapping:1001` → stream `mapping.1001`. The id is one stream-name token (`600000001_13306` for a
 * local port, `managed-client` for a sequence); a decimal id must be canonical (no leading zero).
 * Returns the problem as text for an unknown aggregate or a malformed id.
 */
export function parseAggregateRef(text: string): AggregateRef | { problem: string } {
  const m = /^([a-z][a-z-]{0,31}):([A-Za-z0-9_-]{1,64})$/.exec(text);
  if (!m) return { problem: 'must be <aggregate>:<id>, e.g. mapping:1001' };
  const [, aggregate, id] = m as unknown as [string, string, string];
  const known = auditAggregates();
  if (!known.includes(aggregate)) return { problem: `unknown aggregate ${aggregate} (one of ${known.join(', ')})` };
  if (/^[0-9]+$/.test(id) && !/^[1-9][0-9]{0,15}$/.test(id)) return { problem: 'a decimal id must not have leading zeros' };
  return { aggregate, id, stream: `${aggregate}.${id}` };
}

/** One event as the audit surfaces show it. */
export interface AuditEvent {
  position: number;
  stream: string;
  version: number;
  id: string;
  type: string;
  /** Envelope fields below are null only in a malformed event stored before the append guard existed. */
  schema_version: number | null;
  aggregate_type: string;
  aggregate_id: string;
  occurred_at: string | null;
  actor: { kind: string; id: string } | null;
  correlation_id: string | null;
  causation_id: string | null;
  trace?: { traceparent?: string; tracestate?: string };
  /** The payload, secret-like fields replaced by REDACTED. */
  data: unknown;
  /** Paths in `data` whose values were replaced (empty when none). */
  redacted: string[];
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/**
 * The audit view of a stored event. Only id and type are guaranteed by every store (toStoredEvent);
 * the rest is shown as stored when it has the envelope's shape, else null, so one malformed event
 * never makes a whole page unreadable.
 */
export function auditEvent(e: StoredEvent): AuditEvent {
  const raw = e as unknown as Record<string, unknown>;
  const dot = e.stream.indexOf('.');
  const actor = raw['actor'] as { kind?: unknown; id?: unknown } | undefined;
  const trace = raw['trace'] as { traceparent?: unknown; tracestate?: unknown } | undefined;
  const { data, redacted } = redactSecrets(raw['data']);
  const traceView =
    typeof trace === 'object' && trace !== null
      ? {
          ...(typeof trace.traceparent === 'string' ? { traceparent: trace.traceparent } : {}),
          ...(typeof trace.tracestate === 'string' ? { tracestate: trace.tracestate } : {}),
        }
      : undefined;
  return {
    position: e.position,
    stream: e.stream,
    version: e.version,
    id: e.id,
    type: e.type,
    schema_version: typeof raw['schema_version'] === 'number' ? (raw['schema_version'] as number) : null,
    aggregate_type: str(raw['aggregate_type']) ?? e.stream.slice(0, dot),
    aggregate_id: str(raw['aggregate_id']) ?? e.stream.slice(dot + 1),
    occurred_at: str(raw['occurred_at']),
    actor: typeof actor === 'object' && actor !== null && typeof actor.kind === 'string' && typeof actor.id === 'string' ? { kind: actor.kind, id: actor.id } : null,
    correlation_id: str(raw['correlation_id']),
    causation_id: str(raw['causation_id']),
    ...(traceView ? { trace: traceView } : {}),
    data: data === undefined ? null : data,
    redacted,
  };
}
