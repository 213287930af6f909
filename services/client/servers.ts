import { parseEdgeUrl, type EdgeUrl } from '../../shared/transport/url.js';
import { DEFAULT_CONTROL_PORT } from '../../shared/wire/packets.js';

/**
 * One edge the agent may connect to, with its transport (HOST:PORT is TLS; tcp://, ws://, wss://).
 * `address` is the canonical host:port, for comparisons and logs.
 */
export type EdgeAddress = EdgeUrl;

/** The edges an agent was given (`--server A,B`), in order, without duplicates. */
export interface ServerList {
  /** As given (a list joined with ','): what the credentials file records. */
  readonly text: string;
  readonly edges: readonly EdgeAddress[];
}

/** At most this many edges: a list is a few addresses of one cluster, not a scan. */
export const MAX_SERVERS = 32;

/**
 * Parses `[scheme://]host[:port][/path]` entries (see parseEdgeUrl) given as one comma-separated
 * string, an array, or both (each entry may itself hold commas). The port defaults to the control
 * port for TLS and tcp://. Throws an Error naming the bad entry; an empty list is an error.
 */
export function parseServerList(value: string | readonly string[]): ServerList {
  const entries = (typeof value === 'string' ? [value] : value).flatMap((v) => v.split(',')).map((e) => e.trim());
  if (entries.length === 0 || entries.some((e) => e === '')) {
    throw new Error(`invalid server list "${[value].flat().join(',')}": expected [SCHEME://]HOST[:PORT][,...] without empty entries`);
  }
  if (entries.length > MAX_SERVERS) throw new Error(`too many servers (${entries.length}); at most ${MAX_SERVERS}`);
  const edges: EdgeAddress[] = [];
  for (const entry of entries) {
    const edge = parseEdgeUrl(entry, DEFAULT_CONTROL_PORT);
    if (!edges.some((e) => e.text === edge.text)) edges.push(edge);
  }
  return { text: entries.join(','), edges };
}

/**
 * Whether credentials saved for `saved` (the `server` field of the file: one address or a list)
 * may be presented to the edges of `given`: they share an edge, so they name the same cluster
 * (an anonymous client is known to every edge of its cluster). Unparsable saved text never matches.
 */
export function sameCluster(saved: string, given: ServerList): boolean {
  let savedList: ServerList;
  try {
    savedList = parseServerList(saved);
  } catch {
    return false;
  }
  return savedList.edges.some((s) => given.edges.some((g) => g.address === s.address));
}
