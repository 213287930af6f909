import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/nats-core';
import { sql } from 'kysely';
import type { EventEnvelope } from '../contracts/envelope.js';
import type { Db } from '../db/connect.js';
import { VERSION_HEADER } from '../eventstore/jetstream.js';
import { APPEND_LOCK_KEY, EVENTS_CHANNEL } from '../eventstore/postgres.js';

/**
 * Test-only: the one way to put an event in the log past the append guard (assertStorable), as a
 * buggy writer, an older build or a hand edit could have, to test what readers do with it
 * (projector halts, `tunnox ctl events skip`). Production code has no such path.
 *
 * It writes exactly what the store's append writes (same table and columns, or same subject and
 * headers), appending at the end of the stream with the next version, so the event reads back
 * like any other; only the checks on the envelope are left out. Stream names are not checked.
 */
export type RawLog =
  | { kind: 'postgres'; db: Db }
  | { kind: 'jetstream'; nc: NatsConnection; streamName: string; subjectPrefix: string };

/** Stores `envelope` on `stream` unchecked; returns its position. */
export async function rawAppend(log: RawLog, stream: string, envelope: EventEnvelope): Promise<number> {
  return log.kind === 'postgres' ? rawAppendPostgres(log.db, stream, envelope) : rawAppendJetStream(log, stream, envelope);
}

/** As PostgresEventStore.append with expectedRevision 'any': lock, next version, insert, notify. */
async function rawAppendPostgres(db: Db, stream: string, envelope: EventEnvelope): Promise<number> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(${APPEND_LOCK_KEY})`.execute(tx);
    const row = await tx
      .selectFrom('tnx_events')
      .select((eb) => eb.fn.max('version').as('version'))
      .where('stream', '=', stream)
      .executeTakeFirst();
    const version = Number(row?.version ?? 0) + 1;
    const inserted = await tx
      .insertInto('tnx_events')
      .values({ stream, version, event_id: envelope.id, type: envelope.type, envelope: JSON.stringify(envelope) })
      .returning('position')
      .executeTakeFirstOrThrow();
    await sql`select pg_notify(${EVENTS_CHANNEL}, ${String(inserted.position)})`.execute(tx);
    return Number(inserted.position);
  });
}

/**
 * As JetStreamEventStore.append with expectedRevision 'any': Nats-Msg-Id = envelope id, Tnx-Version
 * = the subject's last version + 1, and that last message's sequence as the expected last subject
 * sequence (a concurrent append makes this throw rather than store a wrong version).
 */
async function rawAppendJetStream(
  log: { nc: NatsConnection; streamName: string; subjectPrefix: string },
  stream: string,
  envelope: EventEnvelope,
): Promise<number> {
  const subject = `${log.subjectPrefix}.evt.${stream}`;
  const jsm = await jetstreamManager(log.nc);
  const last = await jsm.streams.getMessage(log.streamName, { last_by_subj: subject });
  const h = headers();
  h.set(VERSION_HEADER, String(Number(last?.header.get(VERSION_HEADER) ?? 0) + 1));
  const ack = await jetstream(log.nc).publish(subject, JSON.stringify(envelope), {
    msgID: envelope.id,
    headers: h,
    expect: { lastSubjectSequence: last?.seq ?? 0 },
  });
  if (ack.duplicate) throw new Error(`rawAppend: envelope id ${envelope.id} is already stored (position ${ack.seq})`);
  return ack.seq;
}
