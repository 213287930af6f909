import { JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/nats-core';
import { withoutStoredSecret } from '../../shared/contracts/events.js';
import { stateStreamName } from '../../shared/bus/state.js';
import { VERSION_HEADER, openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import type { Logger } from '../../shared/platform/logger.js';
import { CtlError } from './ctl-errors.js';

// `tunnox ctl events copy`: the one-off rewrite of a JetStream event log (append-only, deny_delete)
// that removes the mapping secrets earlier releases stored in MappingCreated (schema version 1).
// The copy is a new stream on a new subject prefix: JetStream streams may not share subjects, and
// NATS 2.9 has no subject transforms. Positions (stream sequences) and stream versions are kept
// exactly, so the read models' checkpoints stay valid for the copy.

export interface CopyOptions {
  nc: NatsConnection;
  from: { stream: string; subjectPrefix: string };
  to: { stream: string; subjectPrefix: string };
  /** Replicas of the new stream; default: the source's. */
  replicas?: number;
  /** After a complete copy, delete the source stream and its state stream (`<source>_CFG`). */
  deleteSource?: boolean;
  logger: Logger;
  signal?: AbortSignal;
}

export interface CopyReport {
  from: string;
  to: string;
  /** The last position of the copy (= the source's). */
  last_position: number;
  /** Events copied by this run (a resumed copy starts after what an earlier run copied). */
  copied: number;
  /** Of those, envelopes rewritten without their secret. */
  rewritten: number;
  /** Events already in the destination from an earlier, interrupted run. */
  resumed_after: number;
  deleted_source: string[];
}

const PARALLEL_READS = 64;

async function infoOrNull(jsm: JetStreamManager, name: string) {
  return jsm.streams.info(name).catch((err: unknown) => {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return null;
    throw err;
  });
}

function envelopeId(msg: StoredMsg): string {
  try {
    const id = (msg.json() as { id?: unknown }).id;
    return typeof id === 'string' ? id : '';
  } catch {
    return '';
  }
}

/**
 * Copies every event of the source stream, in order, to the destination: envelopes holding a
 * mapping secret rewritten (withoutStoredSecret), all others byte for byte; the Tnx-Version header
 * and the message id (the envelope id) kept; each publish expects the destination's previous
 * sequence, so position N of the copy is position N of the source or the copy stops. Run it with
 * every process of the cluster stopped (nothing may append meanwhile: a source that grows during
 * the copy is an error). Interrupted, it resumes where it stopped when run again.
 */
export async function copyEventStream(o: CopyOptions): Promise<CopyReport> {
  const { nc, from, to } = o;
  if (from.stream === to.stream) throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--to-stream must name a new stream, not the source');
  if (from.subjectPrefix === to.subjectPrefix) {
    throw new CtlError('TNX_CTL_BAD_ARGUMENT', '--to-subject-prefix must differ from --subject-prefix (JetStream streams cannot share subjects)');
  }
  const jsm = await jetstreamManager(nc);
  const source = await infoOrNull(jsm, from.stream);
  if (!source) throw new CtlError('TNX_CTL_NO_STREAM', `no JetStream stream ${from.stream} (see --stream)`);
  const srcEvt = `${from.subjectPrefix}.evt.`;
  if (source.config.subjects?.length !== 1 || source.config.subjects[0] !== `${srcEvt}>`) {
    throw new CtlError('TNX_CTL_BAD_ARGUMENT', `stream ${from.stream} has subjects ${JSON.stringify(source.config.subjects)}, not ["${srcEvt}>"] (see --subject-prefix)`);
  }
  const last = source.state.last_seq;
  if (source.state.messages !== (last === 0 ? 0 : last - source.state.first_seq + 1) || (last > 0 && source.state.first_seq !== 1)) {
    throw new CtlError('TNX_CTL_STREAM_GAPS', `stream ${from.stream} is not gap-free (first ${source.state.first_seq}, last ${last}, ${source.state.messages} messages): not an event log this command can copy`);
  }
  const existing = await infoOrNull(jsm, to.stream);
  // Creates the destination exactly as an event log (deny_delete, deny_purge), or checks its subjects.
  const store = await openJetStreamEventStore({ nc, streamName: to.stream, subjectPrefix: to.subjectPrefix, replicas: o.replicas ?? source.config.num_replicas ?? 1, logger: o.logger });
  await store.close();
  let done = existing?.state.last_seq ?? 0;
  if (done > last) throw new CtlError('TNX_CTL_COPY_MISMATCH', `stream ${to.stream} already holds ${done} events, more than ${from.stream} (${last})`);
  if (done > 0) {
    const [a, b] = await Promise.all([jsm.streams.getMessage(from.stream, { seq: done }), jsm.streams.getMessage(to.stream, { seq: done })]);
    if (!a || !b || envelopeId(a) === '' || envelopeId(a) !== envelopeId(b)) {
      throw new CtlError('TNX_CTL_COPY_MISMATCH', `stream ${to.stream} is not an earlier copy of ${from.stream} (event ${done} differs); give a new --to-stream`);
    }
    o.logger.warn({ after: done }, 'resuming an interrupted copy');
  }
  const resumedAfter = done;
  const js = jetstream(nc);
  const encoder = new TextEncoder();
  let rewritten = 0;
  while (done < last) {
    if (o.signal?.aborted) throw new CtlError('TNX_CTL_ABORTED', `interrupted after position ${done}; run the same command again to resume`);
    const seqs = Array.from({ length: Math.min(PARALLEL_READS, last - done) }, (_, i) => done + 1 + i);
    const msgs = await Promise.all(seqs.map((seq) => jsm.streams.getMessage(from.stream, { seq })));
    for (const msg of msgs) {
      const seq = done + 1;
      if (!msg || msg.seq !== seq) throw new CtlError('TNX_CTL_STREAM_GAPS', `stream ${from.stream} has no event at position ${seq}`);
      if (!msg.subject.startsWith(srcEvt)) throw new CtlError('TNX_CTL_BAD_EVENT', `position ${seq}: unexpected subject ${msg.subject}`);
      const version = msg.header?.get(VERSION_HEADER);
      if (!version) throw new CtlError('TNX_CTL_BAD_EVENT', `position ${seq}: no ${VERSION_HEADER} header`);
      let payload: Uint8Array = msg.data;
      let envelope: Record<string, unknown> | null = null;
      try {
        const parsed: unknown = JSON.parse(new TextDecoder().decode(msg.data));
        if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) envelope = parsed as Record<string, unknown>;
      } catch {
        // Not JSON: copied as it is (the projector halts on it in the copy as in the source).
      }
      if (envelope) {
        const clean = withoutStoredSecret(envelope);
        if (clean) {
          payload = encoder.encode(JSON.stringify(clean));
          rewritten++;
        }
      }
      const h = headers();
      h.set(VERSION_HEADER, version);
      // No message id: exactness comes from the expected sequence, and an id the source holds twice
      // (a retry after its dedup window) must not be dropped here.
      const ack = await js.publish(to.subjectPrefix + '.evt.' + msg.subject.slice(srcEvt.length), payload, {
        headers: h,
        expect: { lastSequence: seq - 1 },
      });
      if (ack.duplicate || ack.seq !== seq) {
        throw new CtlError('TNX_CTL_COPY_MISMATCH', `position ${seq} landed at ${ack.seq} in ${to.stream}; is something else writing to it?`);
      }
      done = seq;
    }
  }
  const after = await jsm.streams.info(from.stream);
  if (after.state.last_seq !== last) {
    throw new CtlError('TNX_CTL_SOURCE_GREW', `${from.stream} grew from ${last} to ${after.state.last_seq} events during the copy: stop every tunnox process and run the command again (it resumes)`);
  }
  const deleted: string[] = [];
  if (o.deleteSource) {
    for (const name of [stateStreamName(from.stream), from.stream]) {
      if (await infoOrNull(jsm, name)) {
        await jsm.streams.delete(name);
        deleted.push(name);
      }
    }
  }
  return { from: from.stream, to: to.stream, last_position: last, copied: last - resumedAfter, rewritten, resumed_after: resumedAfter, deleted_source: deleted };
}
