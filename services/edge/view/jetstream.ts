import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { EntityUpdateSchema, ensureStateStream, stateFilter, stateStreamName, stateSubject } from '../../../shared/bus/state.js';
import type { Logger } from '../../../shared/platform/logger.js';
import { MemoryEdgeView } from './view.js';

export interface JetStreamViewFeed {
  /** Stream sequence of the last message handled (0 before the first). */
  readonly seq: number;
  stop(): Promise<void>;
}

/**
 * Feeds a view from the state stream: an ordered (ephemeral, flow-controlled, self-recreating)
 * consumer with DeliverPolicy LastPerSubject on `<prefix>.state.>` delivers the newest state of
 * every entity, then every later update. The view is ready once the message at the stream's last
 * sequence (read before the consumer starts) has been applied, or at once if the stream is empty.
 * Malformed messages are logged and skipped; they never reach the view.
 */
export async function startJetStreamViewFeed(opts: {
  nc: NatsConnection;
  stream: string;
  subjectPrefix: string;
  view: MemoryEdgeView;
  logger: Logger;
  /** JetStream replicas if the state stream has to be created here. Default 1. */
  replicas?: number;
}): Promise<JetStreamViewFeed> {
  const log = opts.logger.child({ component: 'view-feed', feed: 'jetstream', stream: opts.stream });
  const jsm = await jetstreamManager(opts.nc);
  await ensureStateStream(jsm, opts.stream, opts.subjectPrefix, undefined, opts.replicas);
  const lastAtStart = (await jsm.streams.info(opts.stream)).state.last_seq;
  const consumer = await jetstream(opts.nc).consumers.get(opts.stream, {
    filter_subjects: stateFilter(opts.subjectPrefix),
    deliver_policy: DeliverPolicy.LastPerSubject,
  });
  const messages = await consumer.consume();
  let applied = 0;
  let seq = 0;
  if (lastAtStart === 0) opts.view.markReady();
  const done = (async () => {
    for await (const msg of messages) {
      let update;
      try {
        const parsed = EntityUpdateSchema.safeParse(msg.json());
        if (!parsed.success) {
          log.warn({ subject: msg.subject, seq: msg.seq, issues: parsed.error.issues }, 'dropped malformed state update');
        } else if (msg.subject !== stateSubject(opts.subjectPrefix, parsed.data.kind, parsed.data.id)) {
          // The subject is what max_msgs_per_subject keys on: a state filed elsewhere is not the entity's.
          log.warn({ subject: msg.subject, seq: msg.seq, kind: parsed.data.kind, id: parsed.data.id }, 'dropped state update on the wrong subject');
        } else {
          update = parsed.data;
        }
      } catch (err) {
        log.warn({ subject: msg.subject, seq: msg.seq, err }, 'dropped state update that is not JSON');
      }
      if (update) {
        try {
          applied += opts.view.apply([update]);
        } catch (err) {
          log.warn({ subject: msg.subject, seq: msg.seq, err }, 'dropped inconsistent state update');
        }
      }
      seq = msg.seq;
      if (!opts.view.ready && msg.seq >= lastAtStart) {
        opts.view.markReady();
        log.info({ seq: msg.seq, applied, ...opts.view.size() }, 'edge view caught up');
      }
    }
  })().catch((err: unknown) => log.error({ err }, 'state stream consumer ended'));
  return {
    get seq() {
      return seq;
    },
    async stop() {
      await messages.close().catch(() => undefined);
      await done;
    },
  };
}

/**
 * A cluster edge's view: a new MemoryEdgeView fed from the state stream that belongs to the event
 * stream `eventsStream` (`<eventsStream>_CFG`). Hand `view` to startEdge; stop `feed` after the edge.
 */
export async function openJetStreamEdgeView(opts: {
  nc: NatsConnection;
  eventsStream: string;
  subjectPrefix: string;
  logger: Logger;
  replicas?: number;
}): Promise<{ view: MemoryEdgeView; feed: JetStreamViewFeed }> {
  const view = new MemoryEdgeView();
  const feed = await startJetStreamViewFeed({
    nc: opts.nc,
    stream: stateStreamName(opts.eventsStream),
    subjectPrefix: opts.subjectPrefix,
    view,
    logger: opts.logger,
    ...(opts.replicas ? { replicas: opts.replicas } : {}),
  });
  return { view, feed };
}
