import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type ConsumerConfig,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type MsgRequest,
  type StreamConfig,
} from '@nats-io/jetstream';
import { headers, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import type { EventEnvelope, StoredEvent } from '../contracts/envelope.js';
import { TunnoxError } from '../platform/errors.js';
import { silentLogger, type Logger } from '../platform/logger.js';
import { Delivery, DeliveryOutcome } from './delivery.js';
import { CorruptEventError, EventStoreMisconfiguredError, EventStoreUnavailableError, WrongExpectedRevisionError } from './errors.js';
import { assertStorable, assertStreamName, pageOf, toStoredEvent } from './stored.js';
import type { AppendOptions, AppendResult, EventStore, ExpectedRevision, ReadStreamOptions, ReadStreamResult, SubscribeOptions, Subscription } from './types.js';

/**
 * Header carrying the event's 1-based version within its aggregate stream. JetStream has no
 * per-subject counter, so the version is computed at append time from the subject's last message
 * (its sequence and its own version header) and the publish carries that very sequence as
 * `expect.lastSubjectSequence`: if anything else lands on the subject in between, the publish is
 * refused, so a stored version is always exactly previous + 1.
 */
export const VERSION_HEADER = 'Tnx-Version';

export interface JetStreamEventStoreOptions {
  /** Owned by the caller: close() leaves it open. */
  nc: NatsConnection;
  /** Default TUNNOX_EVENTS. */
  streamName?: string;
  /** Default `tunnox`; events live on `<prefix>.evt.<aggregate>.<id>`. */
  subjectPrefix?: string;
  logger?: Logger;
  /** Dedup window for envelope ids when the stream is created. Default 2 minutes. */
  duplicateWindowMs?: number;
  /** JetStream replicas when the stream is created (3 on a 3-server cluster). Default 1. */
  replicas?: number;
}

// An 'any' append re-reads and retries when another append slipped in between (see VERSION_HEADER).
const MAX_ANY_ATTEMPTS = 50;
// Concurrent point reads issued by readAll.
const READ_ALL_CONCURRENCY = 64;

export async function openJetStreamEventStore(opts: JetStreamEventStoreOptions): Promise<EventStore> {
  const streamName = opts.streamName ?? 'TUNNOX_EVENTS';
  const prefix = opts.subjectPrefix ?? 'tunnox';
  const logger = (opts.logger ?? silentLogger()).child({ component: 'eventstore', store: 'jetstream', stream: streamName });
  const jsm = await call('connect to JetStream', () => jetstreamManager(opts.nc));
  await ensureStream(jsm, streamName, `${prefix}.evt.>`, opts.duplicateWindowMs ?? 120_000, opts.replicas ?? 1, logger);
  return new JetStreamEventStore(jsm, streamName, prefix, logger);
}

async function ensureStream(jsm: JetStreamManager, name: string, subject: string, duplicateWindowMs: number, replicas: number, logger: Logger): Promise<void> {
  const check = (config: StreamConfig): void => {
    // Positions are stream sequences, so the stream must hold nothing but events.
    if (config.subjects?.length !== 1 || config.subjects[0] !== subject) {
      throw new EventStoreMisconfiguredError(
        `JetStream stream ${name} has subjects ${JSON.stringify(config.subjects)}; the event store needs exactly ["${subject}"]`,
      );
    }
  };
  const existing = await call(`look up stream ${name}`, () => jsm.streams.info(name)).catch((err: unknown) => {
    if (isApiError(err, JetStreamApiCodes.StreamNotFound)) return null;
    throw err;
  });
  if (existing) {
    check(existing.config);
    warnFewerReplicas(logger, name, existing.config.num_replicas, replicas);
    return;
  }
  try {
    await jsm.streams.add({
      name,
      subjects: [subject],
      num_replicas: replicas,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      duplicate_window: nanos(duplicateWindowMs),
      // Events are immutable facts and positions must stay gap-free.
      deny_delete: true,
      deny_purge: true,
    });
    logger.info({ subject }, 'created event stream');
  } catch (err) {
    // Another process may have created it first; accept it if it is the same shape.
    const raced = await call(`look up stream ${name}`, () => jsm.streams.info(name)).catch(() => null);
    if (!raced) throw translateNatsError(err, `create stream ${name}`);
    check(raced.config);
  }
}

/**
 * A stream made earlier keeps its replicas (JetStream can change them, `nats stream edit`, but a
 * process starting up should not): say so when it has fewer than this process was asked for.
 */
export function warnFewerReplicas(logger: Logger, name: string, has: number | undefined, wanted: number): void {
  if ((has ?? 1) < wanted) {
    logger.warn({ stream: name, replicas: has ?? 1, wanted }, `JetStream stream ${name} has fewer replicas than --stream-replicas asks for; it keeps them (nats stream edit ${name} --replicas ${wanted} changes them)`);
  }
}

/**
 * The event log in one JetStream stream (cluster mode), one subject per aggregate stream.
 * - position = stream sequence; revision = sequence of the subject's last message (opaque).
 * - version = the Tnx-Version header (see VERSION_HEADER); readStream also checks it against order.
 * - dedup by envelope id (Nats-Msg-Id) holds within the stream's duplicate window only; a retry
 *   after the window with a numeric or 'no_stream' expectation is then refused as a conflict.
 */
class JetStreamEventStore implements EventStore {
  readonly kind = 'jetstream' as const;
  readonly #jsm: JetStreamManager;
  readonly #js: JetStreamClient;
  readonly #stream: string;
  readonly #evtPrefix: string;
  readonly #filter: string;
  readonly #logger: Logger;
  readonly #subscriptions = new Set<Subscription>();
  #closed = false;

  constructor(jsm: JetStreamManager, stream: string, prefix: string, logger: Logger) {
    this.#jsm = jsm;
    this.#js = jsm.jetstream();
    this.#stream = stream;
    this.#evtPrefix = `${prefix}.evt.`;
    this.#filter = `${prefix}.evt.>`;
    this.#logger = logger;
  }

  async append(stream: string, event: EventEnvelope, options: AppendOptions): Promise<AppendResult> {
    assertStreamName(stream);
    assertStorable(event);
    this.#assertOpen();
    const subject = this.#evtPrefix + stream;
    const expected = options.expectedRevision;
    const payload = JSON.stringify(event);
    for (let attempt = 1; ; attempt++) {
      const last = await this.#lastOn(subject);
      const lastSeq = last?.seq ?? 0;
      // A revision the subject has not reached cannot have come from a read of this stream, and it
      // could be reached later by someone else's append with a different version: refuse now.
      if (typeof expected === 'number' && expected > lastSeq) throw new WrongExpectedRevisionError(stream, describe(expected, lastSeq));
      // For 'no_stream' and a stale number the publish below is refused by the server unless the
      // envelope id is a duplicate (dedup is checked first), which is exactly what we want.
      const expectSeq = expected === 'any' ? lastSeq : expected === 'no_stream' ? 0 : expected;
      const h = headers();
      h.set(VERSION_HEADER, String((last?.version ?? 0) + 1));
      try {
        const ack = await this.#js.publish(subject, payload, { msgID: event.id, headers: h, expect: { lastSubjectSequence: expectSeq } });
        if (!ack.duplicate) return { position: ack.seq, revision: ack.seq, duplicate: false };
        const now = await this.#lastOn(subject);
        return { position: ack.seq, revision: now?.seq ?? ack.seq, duplicate: true };
      } catch (err) {
        const translated = translateNatsError(err, `append to ${stream}`, { stream, expected: describe(expected, lastSeq) });
        if (translated instanceof WrongExpectedRevisionError && expected === 'any' && attempt < MAX_ANY_ATTEMPTS) continue;
        throw translated;
      }
    }
  }

  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<ReadStreamResult> {
    assertStreamName(stream);
    this.#assertOpen();
    const { afterPosition, limit } = pageOf(options);
    const whole = afterPosition === 0 && limit === undefined;
    const subject = this.#evtPrefix + stream;
    // The last message fixes the snapshot: appends after it are not part of this read.
    const last = await this.#lastOn(subject);
    if (!last) return { events: [], revision: null };
    const events: StoredEvent[] = [];
    let seq = afterPosition + 1;
    // Each step advances at least one sequence, so last.seq bounds the loop.
    for (let step = 0; step < last.seq && seq <= last.seq && (limit === undefined || events.length < limit); step++) {
      const msg = await call(`read ${stream}`, () => this.#jsm.streams.getMessage(this.#stream, nextBySubject(seq, subject)));
      if (!msg || msg.seq > last.seq) break;
      const stored = readVersion(msg.header, msg.seq);
      // A whole read numbers events by their order and checks the header against it; a page
      // starts somewhere inside the stream and can only take the header's word.
      const version = whole ? events.length + 1 : stored;
      if (stored !== version) this.#logger.warn({ stream, position: msg.seq, stored, version }, 'version header disagrees with stream order');
      events.push(decode(msg.data, msg.seq, version, stream));
      seq = msg.seq + 1;
    }
    if (whole && events[events.length - 1]?.position !== last.seq) {
      throw new EventStoreUnavailableError(`read ${stream}: the stream changed while it was read (messages removed?)`);
    }
    return { events, revision: last.seq };
  }

  async readLastEvent(stream: string): Promise<{ event: StoredEvent | null; revision: number | null }> {
    assertStreamName(stream);
    this.#assertOpen();
    const subject = this.#evtPrefix + stream;
    const msg = await call(`read last event of ${stream}`, () => this.#jsm.streams.getMessage(this.#stream, { last_by_subj: subject }));
    if (!msg) return { event: null, revision: null };
    return { event: this.#decodeStored(msg.subject, msg.header, msg.data, msg.seq), revision: msg.seq };
  }

  async readAll(afterPosition: number, limit: number): Promise<StoredEvent[]> {
    this.#assertOpen();
    if (limit <= 0) return [];
    const head = await this.headPosition();
    const events: StoredEvent[] = [];
    // The stream holds only events and denies deletes, so every sequence up to head is an event;
    // point reads can then run in parallel. A missing one (gap) is simply skipped.
    let next = afterPosition + 1;
    while (events.length < limit && next <= head) {
      const count = Math.min(READ_ALL_CONCURRENCY, limit - events.length, head - next + 1);
      const seqs = Array.from({ length: count }, (_, i) => next + i);
      const msgs = await Promise.all(
        seqs.map((seq) => call(`read position ${seq}`, () => this.#jsm.streams.getMessage(this.#stream, { seq }))),
      );
      for (const msg of msgs) if (msg) events.push(this.#decodeStored(msg.subject, msg.header, msg.data, msg.seq));
      next += count;
    }
    return events;
  }

  async headPosition(): Promise<number> {
    this.#assertOpen();
    const info = await call('read stream info', () => this.#jsm.streams.info(this.#stream));
    return info.state.last_seq;
  }

  async subscribe(options: SubscribeOptions): Promise<Subscription> {
    this.#assertOpen();
    const durable = durableName(options.name);
    const logger = this.#logger.child({ subscription: options.name, durable });
    await this.#prepareConsumer(durable, options.afterPosition, logger);
    const consumer = await call(`open consumer ${durable}`, () => this.#js.consumers.get(this.#stream, durable));
    const messages = await call(`consume ${durable}`, () => consumer.consume({ abort_on_missing_resource: true }));
    const delivery = new Delivery(options, logger);
    delivery.onStop(() => messages.stop());

    const run = async (): Promise<void> => {
      for await (const msg of messages) {
        // Messages still buffered after a stop stay unacked; the next subscription starts from its checkpoint.
        if (delivery.stopped) return;
        let event: StoredEvent;
        try {
          event = this.#decodeJsMsg(msg);
        } catch (err) {
          delivery.fail(err);
          return;
        }
        const outcome = await delivery.deliver(event);
        if (outcome === DeliveryOutcome.stopped) return;
        msg.ack();
      }
      if (!delivery.stopped) delivery.fail(new EventStoreUnavailableError(`subscription ${options.name}: the consumer ended unexpectedly`));
    };
    const done = run()
      .catch((err: unknown) => delivery.fail(translateNatsError(err, `subscription ${options.name}`)))
      .finally(() => messages.stop());

    const subscription: Subscription = {
      stop: async () => {
        const fromHandler = delivery.stop();
        this.#subscriptions.delete(subscription);
        if (fromHandler) return;
        await done;
        await messages.close().catch(() => undefined);
      },
    };
    this.#subscriptions.add(subscription);
    return subscription;
  }

  /** Stops every subscription. The NATS connection belongs to the caller. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#subscriptions].map((s) => s.stop()));
  }

  /**
   * Makes sure durable `name` will deliver every event after `afterPosition`. An existing durable
   * is kept only if it has nothing in flight and has not handed out anything beyond the caller's
   * checkpoint (the checkpoint is the truth); events it re-delivers at or before the checkpoint
   * are acked without reaching the handler. Otherwise it is recreated at afterPosition + 1, which
   * also avoids waiting out the ack timeout of an event whose handler failed or never finished.
   */
  async #prepareConsumer(name: string, afterPosition: number, logger: Logger): Promise<void> {
    const config: Partial<ConsumerConfig> = {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: afterPosition + 1,
      filter_subject: this.#filter,
      replay_policy: ReplayPolicy.Instant,
      // One event in flight: a redelivery can never overtake a later event.
      max_ack_pending: 1,
      ack_wait: nanos(30_000),
    };
    const existing = await call(`look up consumer ${name}`, () => this.#jsm.consumers.info(this.#stream, name)).catch((err: unknown) => {
      if (isApiError(err, JetStreamApiCodes.ConsumerNotFound)) return null;
      throw err;
    });
    if (existing && reusable(existing, this.#filter, afterPosition)) {
      logger.debug({ delivered: existing.delivered.stream_seq, afterPosition }, 'reusing durable consumer');
      return;
    }
    if (existing) {
      logger.info(
        { delivered: existing.delivered.stream_seq, ackPending: existing.num_ack_pending, afterPosition },
        'recreating durable consumer at the checkpoint',
      );
      await call(`delete consumer ${name}`, () => this.#jsm.consumers.delete(this.#stream, name));
    }
    await call(`create consumer ${name}`, () => this.#jsm.consumers.add(this.#stream, config));
  }

  async #lastOn(subject: string): Promise<{ seq: number; version: number } | null> {
    const msg = await call(`read last event on ${subject}`, () => this.#jsm.streams.getMessage(this.#stream, { last_by_subj: subject }));
    return msg ? { seq: msg.seq, version: readVersion(msg.header, msg.seq) } : null;
  }

  #decodeJsMsg(msg: JsMsg): StoredEvent {
    return this.#decodeStored(msg.subject, msg.headers, msg.data, msg.seq);
  }

  #decodeStored(subject: string, header: MsgHdrs | undefined, data: Uint8Array, seq: number): StoredEvent {
    if (!subject.startsWith(this.#evtPrefix)) throw new CorruptEventError(seq, `unexpected subject ${subject}`);
    return decode(data, seq, readVersion(header, seq), subject.slice(this.#evtPrefix.length));
  }

  #assertOpen(): void {
    if (this.#closed) throw new EventStoreUnavailableError('the event store is closed');
  }
}

function reusable(info: ConsumerInfo, filter: string, afterPosition: number): boolean {
  const c = info.config;
  return (
    c.filter_subject === filter &&
    c.ack_policy === AckPolicy.Explicit &&
    c.max_ack_pending === 1 &&
    info.num_ack_pending === 0 &&
    // A pull request left by a stopped subscriber could swallow the next event until ack_wait.
    info.num_waiting === 0 &&
    info.delivered.stream_seq <= afterPosition
  );
}

/** Durable consumer names may not contain `.`, `*`, `>` or whitespace. */
export function durableName(name: string): string {
  const clean = name.replace(/[^A-Za-z0-9_-]/g, '_');
  if (!clean) throw new TunnoxError('TNX_EVENTSTORE_INVALID_SUBSCRIPTION', 'subscription name must not be empty');
  return clean;
}

/**
 * STREAM.MSG.GET accepts `next_by_subj` on NATS 2.9 (verified on 2.9.10), but the v3 client types
 * only declare it for direct gets, which need allow_direct and a newer server for wildcards.
 */
function nextBySubject(seq: number, subject: string): MsgRequest {
  return { seq, next_by_subj: subject } as unknown as MsgRequest;
}

function readVersion(header: MsgHdrs | undefined, seq: number): number {
  const raw = header?.get(VERSION_HEADER);
  const version = raw ? Number(raw) : NaN;
  if (!Number.isInteger(version) || version < 1) throw new CorruptEventError(seq, `missing or invalid ${VERSION_HEADER} header`);
  return version;
}

const decoder = new TextDecoder();

function decode(data: Uint8Array, seq: number, version: number, stream: string): StoredEvent {
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(data));
  } catch (err) {
    throw new CorruptEventError(seq, 'payload is not JSON', { cause: err });
  }
  return toStoredEvent(raw, seq, version, stream);
}

function describe(expected: ExpectedRevision, lastSeq: number): string {
  return `${String(expected)} (stream is at ${lastSeq === 0 ? 'no_stream' : lastSeq})`;
}

function isApiError(err: unknown, code: number): boolean {
  const e = err instanceof EventStoreUnavailableError ? err.cause : err;
  return e instanceof JetStreamApiError && e.code === code;
}

/**
 * The one place NATS failures become event-store errors: a failed subject-sequence expectation is
 * a revision conflict; every other broker or transport failure means the store is unavailable.
 */
export function translateNatsError(err: unknown, what: string, ctx: { stream?: string; expected?: string } = {}): unknown {
  if (err instanceof TunnoxError) return err;
  if (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  ) {
    return new WrongExpectedRevisionError(ctx.stream ?? '?', ctx.expected ?? '?', { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new EventStoreUnavailableError(`${what} failed: ${message}`, { cause: err });
}

async function call<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw translateNatsError(err, what);
  }
}
