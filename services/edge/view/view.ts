import type { ClientState, EntityUpdate, MappingState } from '../../../shared/bus/state.js';
import type { AgentMapping } from '../../../shared/wire/messages.js';

export type { ClientState, EntityUpdate, MappingState } from '../../../shared/bus/state.js';

/**
 * A client's side of a mapping as the view knows it: what config.sync carries, but with the
 * secret's generation instead of the secret. The edge derives the secret when it pushes
 * (shared/platform/mapping-secrets.ts); the view never holds one.
 */
export type ViewAgentMapping = Omit<AgentMapping, 'secret_key'> & { secret_generation: number };

export interface ClientConfig {
  version: number;
  mappings: ViewAgentMapping[];
}

/** What one applied batch changed, for the edge to act on (pushes, listeners, tunnel teardown). */
export interface ViewChange {
  /** Clients whose own state or set of mappings changed. */
  clients: ReadonlySet<number>;
  /** Mappings that changed: `before` and `after` (undefined = absent). */
  mappings: ReadonlyMap<number, { before: MappingState | undefined; after: MappingState | undefined }>;
}

/**
 * The edge's read side: everything the handshake, TunnelOpen, public listeners and config pushes
 * need, in memory. Fed by a feed (the JetStream state stream in a cluster, the read models in
 * standalone mode); the edge never queries a database.
 */
export interface EdgeView {
  /** True once the feed caught up with what existed when it started. */
  readonly ready: boolean;
  whenReady(): Promise<void>;
  client(clientId: number): ClientState | undefined;
  /** Whether the view holds a tombstone for this client (it existed and is gone). */
  clientDeleted(clientId: number): boolean;
  mapping(mappingId: number): MappingState | undefined;
  /** Enabled mappings whose visitors arrive at an edge port, by mapping id. */
  publicMappings(): MappingState[];
  /** A client's side of every enabled mapping it takes part in, labelled with its config_version. */
  clientConfig(clientId: number): ClientConfig;
  /** Resolves with the client once the view knows it (and `until` holds), or undefined after `timeoutMs`. */
  waitForClient(clientId: number, timeoutMs: number, until?: (client: ClientState) => boolean): Promise<ClientState | undefined>;
  /** Called after every applied batch that changed something; returns an unsubscribe. */
  subscribe(listener: (change: ViewChange) => void): () => void;
}

/**
 * The in-memory, versioned store behind EdgeView. Every entity carries the projector position it
 * is as of; an update at an older or equal version is ignored (duplicates, reordering), and a
 * tombstone keeps its version so a late stale state cannot bring the entity back.
 */
export class MemoryEdgeView implements EdgeView {
  private readonly clients = new Map<number, { version: number; state: ClientState | null }>();
  private readonly mappings = new Map<number, { version: number; state: MappingState | null }>();
  /** client id → ids of the live mappings it takes part in (source or target). */
  private readonly byClient = new Map<number, Set<number>>();
  private readonly listeners = new Set<(change: ViewChange) => void>();
  private readonly clientWaiters = new Set<() => void>();
  private isReady = false;
  private readonly readyPromise: Promise<void>;
  private resolveReady!: () => void;

  constructor() {
    this.readyPromise = new Promise((resolve) => (this.resolveReady = resolve));
  }

  get ready(): boolean {
    return this.isReady;
  }

  whenReady(): Promise<void> {
    return this.readyPromise;
  }

  /** Called by the feed once it has applied everything that existed when it started. */
  markReady(): void {
    if (this.isReady) return;
    this.isReady = true;
    this.resolveReady();
    this.wakeClientWaiters();
  }

  /** The version held for an entity (tombstones included), or -1. */
  versionOf(kind: EntityUpdate['kind'], id: number): number {
    return (kind === 'client' ? this.clients : this.mappings).get(id)?.version ?? -1;
  }

  /**
   * Applies updates in order, skipping stale ones, then tells the listeners once. Returns how many
   * were applied.
   */
  apply(updates: readonly EntityUpdate[]): number {
    const clients = new Set<number>();
    const mappings = new Map<number, { before: MappingState | undefined; after: MappingState | undefined }>();
    let applied = 0;
    for (const u of updates) {
      if (u.version <= this.versionOf(u.kind, u.id)) continue;
      applied++;
      if (u.kind === 'client') {
        if (u.state && u.state.client_id !== u.id) throw new Error(`client update ${u.id} carries the state of client ${u.state.client_id}`);
        this.clients.set(u.id, { version: u.version, state: u.state });
        clients.add(u.id);
        continue;
      }
      if (u.state && u.state.mapping_id !== u.id) throw new Error(`mapping update ${u.id} carries the state of mapping ${u.state.mapping_id}`);
      const before = this.mappings.get(u.id)?.state ?? undefined;
      this.mappings.set(u.id, { version: u.version, state: u.state });
      for (const c of involved(before)) {
        this.byClient.get(c)?.delete(u.id);
        clients.add(c);
      }
      for (const c of involved(u.state ?? undefined)) {
        let set = this.byClient.get(c);
        if (!set) this.byClient.set(c, (set = new Set()));
        set.add(u.id);
        clients.add(c);
      }
      const prior = mappings.get(u.id);
      mappings.set(u.id, { before: prior ? prior.before : before, after: u.state ?? undefined });
    }
    if (applied === 0) return 0;
    this.wakeClientWaiters();
    const change: ViewChange = { clients, mappings };
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch {
        // A listener's failure is its own (the edge logs inside its listener); the others still run.
      }
    }
    return applied;
  }

  client(clientId: number): ClientState | undefined {
    return this.clients.get(clientId)?.state ?? undefined;
  }

  clientDeleted(clientId: number): boolean {
    const entry = this.clients.get(clientId);
    return entry !== undefined && entry.state === null;
  }

  mapping(mappingId: number): MappingState | undefined {
    return this.mappings.get(mappingId)?.state ?? undefined;
  }

  publicMappings(): MappingState[] {
    const out: MappingState[] = [];
    for (const { state } of this.mappings.values()) if (state && state.enabled && state.public_port !== null) out.push(state);
    return out.sort((a, b) => a.mapping_id - b.mapping_id);
  }

  /** Same shape and order as the read-model query it replaces (loadClientConfig). */
  clientConfig(clientId: number): ClientConfig {
    const ids = [...(this.byClient.get(clientId) ?? [])].sort((a, b) => a - b);
    const mappings: ViewAgentMapping[] = [];
    for (const id of ids) {
      const row = this.mapping(id);
      if (!row || !row.enabled) continue;
      if (row.source_client_id === clientId && row.local_port !== null) {
        mappings.push({
          mapping_id: row.mapping_id,
          protocol: row.protocol,
          role: 'source',
          local_host: row.local_host ?? '127.0.0.1',
          local_port: row.local_port,
          secret_generation: row.secret_generation,
        });
      }
      if (row.target_client_id === clientId) {
        mappings.push({
          mapping_id: row.mapping_id,
          protocol: row.protocol,
          role: 'target',
          target_host: row.target_host,
          target_port: row.target_port,
          secret_generation: row.secret_generation,
        });
      }
    }
    return { version: this.client(clientId)?.config_version ?? 0, mappings };
  }

  async waitForClient(clientId: number, timeoutMs: number, until?: (client: ClientState) => boolean): Promise<ClientState | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const known = this.client(clientId);
      if (known && (!until || until(known))) return known;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          clearTimeout(timer);
          this.clientWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.clientWaiters.add(wake);
      });
    }
  }

  subscribe(listener: (change: ViewChange) => void): () => void {
    const wrapped = (change: ViewChange): void => listener(change);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /** Ids of the live mappings a client takes part in (enabled or not). */
  mappingsOf(clientId: number): number[] {
    return [...(this.byClient.get(clientId) ?? [])];
  }

  /** Counts for logs and tests (tombstones excluded). */
  size(): { clients: number; mappings: number } {
    let clients = 0;
    let mappings = 0;
    for (const e of this.clients.values()) if (e.state) clients++;
    for (const e of this.mappings.values()) if (e.state) mappings++;
    return { clients, mappings };
  }

  private wakeClientWaiters(): void {
    for (const wake of [...this.clientWaiters]) wake();
  }
}

function involved(m: MappingState | undefined): number[] {
  if (!m) return [];
  return m.source_client_id === null || m.source_client_id === m.target_client_id ? [m.target_client_id] : [m.source_client_id, m.target_client_id];
}
