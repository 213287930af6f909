import { z } from 'zod';
import { auditEvent, parseAggregateRef, type AuditEvent } from '../../../../shared/contracts/audit.js';
import { EVENT_SCHEMAS, isEventType } from '../../../../shared/contracts/events.js';
import type { StoredEvent } from '../../../../shared/contracts/envelope.js';
import { PageQuery } from '../../pagination.js';

const MAX_TYPES = 20;

/** A log position in a query string: canonical decimal, 0 for the start. */
const Position = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,15})$/, 'must be a log position: 0, or next_cursor or an event position from an earlier answer')
  .transform(Number)
  .pipe(z.number().max(Number.MAX_SAFE_INTEGER, 'must be a log position: 0, or next_cursor or an event position from an earlier answer'));

export const EventsQuery = z.strictObject({
  aggregate: z
    .string()
    .max(100)
    .transform((value, ctx) => {
      const ref = parseAggregateRef(value);
      if ('problem' in ref) {
        ctx.addIssue({ code: 'custom', message: ref.problem });
        return z.NEVER;
      }
      return ref;
    })
    .optional()
    .describe("one aggregate's events, in order: <aggregate>:<id>, e.g. mapping:1001, client:600000001, user:100000001, port:20000"),
  type: z
    .string()
    .max(MAX_TYPES * 40)
    .transform((value, ctx) => {
      const types = value.split(',');
      if (types.length > MAX_TYPES) {
        ctx.addIssue({ code: 'custom', message: `at most ${MAX_TYPES} event types` });
        return z.NEVER;
      }
      const unknown = types.filter((t) => !isEventType(t));
      if (unknown.length > 0) {
        ctx.addIssue({ code: 'custom', message: `unknown event type ${JSON.stringify(unknown[0])} (one of ${Object.keys(EVENT_SCHEMAS).join(', ')})` });
        return z.NEVER;
      }
      return new Set(types);
    })
    .optional()
    .describe('only events of these types, comma-separated: MappingCreated,MappingDeleted'),
  after: Position.optional().describe('events after this log position: 0 (the default) for the start, next_cursor for the next page, or the position of the last event seen to follow the log'),
  limit: PageQuery.limit,
});

const NullableText = z.string().nullable();

export const EventView = z
  .object({
    position: z.number().int().positive().describe('global log position (JetStream stream sequence, or PostgreSQL log position)'),
    stream: z.string().describe('aggregate stream, e.g. mapping.1001'),
    version: z.number().int().positive().describe('1-based index of the event in its stream'),
    id: z.string().describe('envelope id (uuid)'),
    type: z.string(),
    schema_version: z.number().int().nullable(),
    aggregate_type: z.string(),
    aggregate_id: z.string(),
    occurred_at: NullableText.describe('RFC 3339; null (like every nullable envelope field here) only for a malformed event stored before the append guard'),
    actor: z.object({ kind: z.string(), id: z.string() }).nullable().describe('api_key (its id: sha256 prefix, never the key), client, node, system or operator'),
    correlation_id: NullableText,
    causation_id: NullableText,
    trace: z.object({ traceparent: z.string().optional(), tracestate: z.string().optional() }).optional(),
    data: z.unknown().describe('the payload; every secret-like field (by name: secret, password, token, key, hash, salt, auth code...) is "[redacted]"'),
    redacted: z.array(z.string()).describe('paths in data whose values were redacted'),
  })
  .describe('one event: the stored envelope and its payload, secrets redacted');

export const EventsPage = z.object({
  events: z.array(EventView),
  next_cursor: z
    .string()
    .nullable()
    .describe('a log position: pass as ?after= for the next page; null when this page reached the end of the log as it is now'),
});

export function eventView(e: StoredEvent): AuditEvent {
  return auditEvent(e);
}
