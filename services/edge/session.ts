import type { Socket } from 'node:net';
import type { Db } from '../../shared/db/connect.js';
import { ControlChannel } from '../../shared/net/control.js';
import type { Logger } from '../../shared/platform/logger.js';
import type { FrameDecoder } from '../../shared/wire/codec.js';
import { WireErrorCode, type SessionCloseReason } from '../../shared/wire/codes.js';
import type { Command, CommandResp, ControlMessage, TunnelEnd } from '../../shared/wire/messages.js';
import { PacketType } from '../../shared/wire/packets.js';
import { loadClientConfig } from './readmodel.js';

/** What an agent may send on its control connection once the handshake is done. */
const FROM_AGENT: ReadonlySet<number> = new Set([PacketType.Heartbeat, PacketType.CommandResp, PacketType.TunnelEnd]);

type CommandName = Command['name'];
type CommandPayload<N extends CommandName> = Extract<Command, { name: N }>['payload'];

export interface ControlSessionOptions {
  clientId: number;
  clientType: 'managed' | 'anonymous';
  sessionId: string;
  remoteAddr: string;
  socket: Socket;
  decoder: FrameDecoder;
  db: Db;
  logger: Logger;
  heartbeatIntervalMs: number;
  commandTimeoutMs: number;
  /** Called once when the session ends, for whatever reason. */
  onClosed: (session: ControlSession, reason: string) => void;
  /** The agent vouches that its half of a tunnel ended cleanly (see TunnelBroker). */
  onTunnelEnd?: (session: ControlSession, end: TunnelEnd) => void;
}

/**
 * One agent's control connection on this edge: commands with matched responses, config pushes
 * (versioned, never older than what the agent already has), and orderly close. Owns its socket
 * through the ControlChannel.
 */
export class ControlSession {
  readonly clientId: number;
  readonly clientType: 'managed' | 'anonymous';
  readonly sessionId: string;
  readonly remoteAddr: string;
  private readonly log: Logger;
  private readonly channel: ControlChannel;
  private readonly waiting = new Map<string, { resolve: (r: CommandResp) => void; timer: NodeJS.Timeout }>();
  private nextCommandId = 1;
  private pushedVersion = -1;
  private configQueue: Promise<void> = Promise.resolve();
  /** Settles when the agent has answered the latest config push (or the push failed). */
  private configAnswered: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: ControlSessionOptions) {
    this.clientId = o.clientId;
    this.clientType = o.clientType;
    this.sessionId = o.sessionId;
    this.remoteAddr = o.remoteAddr;
    this.log = o.logger.child({ clientId: o.clientId, sessionId: o.sessionId });
    this.channel = new ControlChannel({
      socket: o.socket,
      decoder: o.decoder,
      accept: FROM_AGENT,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      onMessage: (msg) => this.onMessage(msg),
      onClose: (reason) => this.onChannelClosed(reason),
    });
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  start(): void {
    this.channel.start();
  }

  /**
   * Sends a command and resolves with the agent's answer. Never rejects: a timeout or a closed
   * session resolves as a failed response, so callers handle one outcome shape.
   */
  command<N extends CommandName>(name: N, payload: CommandPayload<N>, timeoutMs = this.o.commandTimeoutMs): Promise<CommandResp> {
    const id = `c${this.nextCommandId++}`;
    return new Promise((resolve) => {
      if (this.closed) {
        resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTargetOffline, message: 'session closed' } });
        return;
      }
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTimeout, message: `no answer to ${name} within ${timeoutMs} ms` } });
      }, timeoutMs);
      timer.unref();
      this.waiting.set(id, { resolve, timer });
      this.channel.send(PacketType.Command, { id, name, payload } as Command);
    });
  }

  /**
   * Queues a config push. Pushes run one at a time; one is skipped when the agent already has
   * `minVersion` or newer, so duplicate or late notices cost nothing but a comparison.
   */
  syncConfig(minVersion?: number): Promise<void> {
    this.configQueue = this.configQueue.then(async () => {
      if (this.closed || (minVersion !== undefined && minVersion <= this.pushedVersion)) return;
      try {
        const config = await loadClientConfig(this.o.db, this.clientId);
        if (this.closed || config.version <= this.pushedVersion) return;
        this.pushedVersion = config.version;
        const started = Date.now();
        this.configAnswered = this.command('config.sync', config).then((resp) => {
          if (resp.ok) this.log.debug({ version: config.version, mappings: config.mappings.length, ms: Date.now() - started }, 'config pushed');
          else if (!this.closed) this.log.warn({ version: config.version, error: resp.error }, 'agent did not apply the config');
        });
      } catch (err) {
        this.log.error({ err }, 'could not load the client config; the next notice or reconnect retries');
      }
    });
    return this.configQueue;
  }

  /**
   * Resolves once every config push queued so far has been answered by the agent. A new mapping
   * reaches the edge's listeners (public port, source agent) and the target agent in parallel; a
   * tunnel request must not overtake the config that tells the target about the mapping.
   */
  async configSettled(): Promise<void> {
    await this.configQueue;
    await this.configAnswered;
  }

  /** Tells the agent why (when `notify` is given), flushes, and closes. Idempotent. */
  close(reason: string, notify?: SessionCloseReason): void {
    if (this.closed) return;
    if (notify) this.channel.send(PacketType.Command, { id: `c${this.nextCommandId++}`, name: 'session.close', payload: { reason: notify } });
    this.channel.close(reason);
  }

  private onMessage(msg: ControlMessage): void {
    if (msg.type === PacketType.TunnelEnd) this.o.onTunnelEnd?.(this, msg.body);
    if (msg.type !== PacketType.CommandResp) return;
    const w = this.waiting.get(msg.body.id);
    if (!w) return; // late answer to a command that already timed out
    this.waiting.delete(msg.body.id);
    clearTimeout(w.timer);
    w.resolve(msg.body);
  }

  private onChannelClosed(reason: string): void {
    for (const [id, w] of this.waiting) {
      clearTimeout(w.timer);
      w.resolve({ id, ok: false, error: { code: WireErrorCode.TunnelTargetOffline, message: 'session closed' } });
    }
    this.waiting.clear();
    this.o.onClosed(this, reason);
  }
}
