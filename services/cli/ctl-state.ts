import { parseAggregateRef, redactSecrets } from '../../shared/contracts/audit.js';
import { parseStoredEvent } from '../../shared/contracts/events.js';
import type { StoredEvent } from '../../shared/contracts/envelope.js';
import { apiKeyDecider } from '../../shared/domain/apikey/apikey.decider.js';
import { accountDecider } from '../../shared/domain/account/account.decider.js';
import { clientDecider } from '../../shared/domain/client/client.decider.js';
import { clientSessionDecider } from '../../shared/domain/client/client-session.decider.js';
import type { Decider } from '../../shared/domain/decider.js';
import { localPortDecider } from '../../shared/domain/localport/localport.decider.js';
import { mappingDecider } from '../../shared/domain/mapping/mapping.decider.js';
import { portDecider } from '../../shared/domain/port/port.decider.js';
import { sequenceDecider } from '../../shared/domain/sequence/sequence.decider.js';
import { userDecider } from '../../shared/domain/user/user.decider.js';
import { usernameDecider } from '../../shared/domain/user/username.decider.js';
import type { EventStore } from '../../shared/eventstore/types.js';
import { errorMessage } from '../../shared/platform/errors.js';
import { findOperatorSkip } from '../projector/runner.js';
import { CtlError } from './ctl-errors.js';

// `tunnox ctl state`: an aggregate's state as of a point in the log, folded with the same evolve
// the commands decide on, so it is exactly what a command at that point would have seen.

/** The aggregates with a decider whose state means something on its own. */
export const STATE_DECIDERS: Readonly<Record<string, Decider<unknown, never>>> = {
  mapping: mappingDecider as Decider<unknown, never>,
  user: userDecider as Decider<unknown, never>,
  client: clientDecider as Decider<unknown, never>,
  'client-session': clientSessionDecider as Decider<unknown, never>,
  port: portDecider as Decider<unknown, never>,
  localport: localPortDecider as Decider<unknown, never>,
  sequence: sequenceDecider as Decider<unknown, never>,
  account: accountDecider as Decider<unknown, never>,
  username: usernameDecider as Decider<unknown, never>,
  apikey: apiKeyDecider as Decider<unknown, never>,
};

/** `--at`: a log position (decimal), or a time (RFC 3339, or a date: its midnight UTC). */
export type PointInLog = { position: number } | { time: string };

export function parsePoint(text: string): PointInLog {
  if (/^[0-9]+$/.test(text)) {
    if (!/^(0|[1-9][0-9]{0,15})$/.test(text) || !Number.isSafeInteger(Number(text))) {
      throw new CtlError('TNX_CTL_BAD_ARGUMENT', `--at ${text}: a position is a decimal number without leading zeros`);
    }
    return { position: Number(text) };
  }
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/;
  const ms = Date.parse(text);
  if (!iso.test(text) || Number.isNaN(ms)) {
    throw new CtlError('TNX_CTL_BAD_ARGUMENT', `--at ${text}: neither a log position nor a time (2026-05-01T12:00:00Z, 2026-05-01T14:00+02:00, 2026-05-01)`);
  }
  return { time: new Date(ms).toISOString() };
}

export interface StateAt {
  aggregate: string;
  stream: string;
  /** What --at asked for (a time normalized to UTC). */
  at: PointInLog | { head: true };
  /** The stream version at that point: events up to it, skipped ones included. */
  version: number;
  /** Events of the stream recorded after that point (not folded). */
  later_events: number;
  /** The last event folded. */
  last_event: { position: number; type: string; occurred_at: string; actor: string } | null;
  /** Positions of events an operator skipped (EventSkipped), left out as the projector leaves them out. */
  skipped: number[];
  /** The decider's state, secret-like fields redacted. */
  state: unknown;
  redacted: string[];
}

/**
 * Folds `kind:id` from its first event up to `at`: with a position, every event at or before it;
 * with a time, the events before the first one that occurred after it (the stream's prefix, so a
 * writer's clock running behind another's cannot fold an event without one recorded before it).
 */
export async function stateAt(store: EventStore, kind: string, id: string, at?: PointInLog): Promise<StateAt> {
  const decider = STATE_DECIDERS[kind];
  if (!decider) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `no state for ${kind}: one of ${Object.keys(STATE_DECIDERS).join(', ')}`);
  const ref = parseAggregateRef(`${kind}:${id}`);
  if ('problem' in ref) throw new CtlError('TNX_CTL_BAD_ARGUMENT', `${kind} ${id}: ${ref.problem}`);
  const { events } = await store.readStream(ref.stream);
  if (events.length === 0) throw new CtlError('TNX_CTL_NO_AGGREGATE', `${ref.stream} has no events: no ${kind} ${id} was ever recorded`);
  const cut = at === undefined ? events.length : events.findIndex((e) => ('position' in at ? e.position > at.position : Date.parse(e.occurred_at) > Date.parse(at.time)));
  const folded = cut === -1 ? events : events.slice(0, cut);

  let state = decider.initialState();
  const skipped: number[] = [];
  let last: StoredEvent | undefined;
  for (const e of folded) {
    let typed;
    try {
      typed = parseStoredEvent(e);
    } catch (err) {
      if (await findOperatorSkip(store, e)) {
        skipped.push(e.position);
        continue;
      }
      throw new CtlError('TNX_CTL_CANNOT_FOLD', `the event at position ${e.position} (${e.type}) cannot be folded: ${errorMessage(err)}`);
    }
    state = decider.evolve(state, typed);
    last = e;
  }
  const { data, redacted } = redactSecrets(state);
  return {
    aggregate: `${kind}:${id}`,
    stream: ref.stream,
    at: at ?? { head: true },
    version: folded.length,
    later_events: events.length - folded.length,
    last_event: last ? { position: last.position, type: last.type, occurred_at: last.occurred_at, actor: `${last.actor.kind}:${last.actor.id}` } : null,
    skipped,
    state: data,
    redacted,
  };
}
