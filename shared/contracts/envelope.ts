import { z } from 'zod';

export const ActorSchema = z.object({
  kind: z.enum(['api_key', 'client', 'node', 'system', 'operator']),
  id: z.string().min(1),
});
export type Actor = z.infer<typeof ActorSchema>;

/**
 * Every event carries this envelope (DESIGN.md section 6). `data` is validated per `type` by the
 * schemas in events.ts. Envelopes are immutable facts: never edit a stored one, add a schema version.
 */
export const EnvelopeSchema = z.object({
  id: z.string().uuid(),
  type: z.string().min(1),
  schema_version: z.number().int().positive(),
  aggregate_type: z.string().min(1),
  aggregate_id: z.string().min(1),
  occurred_at: z.string().datetime({ offset: true }),
  actor: ActorSchema,
  correlation_id: z.string().min(1),
  causation_id: z.string().nullable(),
  trace: z.object({ traceparent: z.string().optional(), tracestate: z.string().optional() }).optional(),
  data: z.unknown(),
});

export interface EventEnvelope<TType extends string = string, TData = unknown> {
  readonly id: string;
  readonly type: TType;
  readonly schema_version: number;
  readonly aggregate_type: string;
  readonly aggregate_id: string;
  readonly occurred_at: string;
  readonly actor: Actor;
  readonly correlation_id: string;
  readonly causation_id: string | null;
  readonly trace?: { traceparent?: string; tracestate?: string };
  readonly data: TData;
}

/** An envelope as read back from an event store. */
export interface StoredEvent<TType extends string = string, TData = unknown> extends EventEnvelope<TType, TData> {
  /** Global, gap-tolerant, strictly increasing position (JetStream stream sequence, or PostgreSQL bigserial). */
  readonly position: number;
  /** 1-based index of this event within its aggregate stream. */
  readonly version: number;
  /** The aggregate stream name, e.g. `mapping.1001`. */
  readonly stream: string;
}

/** The aggregate stream name for an aggregate instance, e.g. streamName('mapping', 1001) = 'mapping.1001'. */
export function streamName(aggregateType: string, aggregateId: string | number): string {
  return `${aggregateType}.${aggregateId}`;
}
