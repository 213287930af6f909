import { MAX_AGENT_ERROR_CHARS, type DomainEvent, type EventData, type TypedStoredEvent } from '../../contracts/events.js';
import type { Decider } from '../decider.js';

/**
 * Stream `mapping-status.<mapping_id>`: facts an edge observed about one side of a mapping (the
 * source agent's listener, the target agent's readiness). Kept apart from `mapping.<id>` so they
 * never conflict with API commands on the mapping, appended without a revision check (two edges
 * may report at once), and never rejected: a report about a mapping deleted meanwhile is still
 * what the agent said. The read model decides what it means.
 */
export type RecordMappingAgentStatus = {
  readonly type: 'RecordMappingAgentStatus';
  readonly data: EventData<'MappingAgentStatusReported'>;
};

/** Nothing to remember: every report is recorded. */
export type MappingStatusState = null;

/**
 * Makes agent-supplied text safe to store: PostgreSQL refuses NUL in text/jsonb, and a lone UTF-16
 * surrogate is not valid Unicode (JSON encoders turn it into an escape PostgreSQL rejects). Other
 * control characters would only garble logs and API output. Cut to `max` characters without
 * splitting a surrogate pair.
 */
export function cleanAgentText(text: string, max = MAX_AGENT_ERROR_CHARS): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += text[i]! + text[i + 1]!;
        i++;
      } else {
        out += '\ufffd';
      }
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      out += '\ufffd';
    } else if (c < 0x20 || c === 0x7f) {
      out += c === 0x09 || c === 0x0a || c === 0x0d ? ' ' : '';
    } else {
      out += text[i]!;
    }
  }
  out = out.trim();
  if (out.length <= max) return out;
  // Cut before a high surrogate whose pair would be split, and leave room for the ellipsis.
  let end = max - 1;
  const last = out.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${out.slice(0, end)}…`;
}

export const mappingStatusDecider: Decider<MappingStatusState, RecordMappingAgentStatus> = {
  initialState: () => null,
  evolve: (state, _event: TypedStoredEvent) => state,
  decide: (command): DomainEvent[] => {
    const { error, ...rest } = command.data;
    // An error status always says why; an active one never carries a stale reason.
    const data =
      rest.status === 'error' ? { ...rest, error: cleanAgentText(error ?? '') || 'the agent reported an error without a reason' } : rest;
    return [{ type: 'MappingAgentStatusReported', data }];
  },
};
