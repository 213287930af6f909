import { AsyncLocalStorage } from 'node:async_hooks';
import type { StoredEvent } from '../contracts/envelope.js';
import type { Logger } from '../platform/logger.js';
import type { SubscribeOptions } from './types.js';

export const DeliveryOutcome = {
  /** The handler resolved: the event counts as delivered (ack it). */
  delivered: 'delivered',
  /** At or before the last delivered position (checkpoint or redelivery): not handed out, ack it. */
  skipped: 'skipped',
  /** The subscription stopped or halted: the event was not handled and must not be acked. */
  stopped: 'stopped',
} as const;
export type DeliveryOutcome = (typeof DeliveryOutcome)[keyof typeof DeliveryOutcome];

// Lets stop() notice that it is being called from inside a handler, where waiting for the
// in-flight handler would wait for itself.
const insideHandler = new AsyncLocalStorage<Delivery>();

/**
 * The store-independent half of a subscription: hands events to the handler strictly one at a
 * time and in increasing position, never twice, and halts on the first failure (onError is called
 * exactly once, after the subscription is marked stopped, so it may call stop() itself).
 */
export class Delivery {
  #stopped = false;
  #lastPosition: number;
  readonly #options: SubscribeOptions;
  readonly #logger: Logger;
  readonly #onStop: Array<() => void> = [];

  constructor(options: SubscribeOptions, logger: Logger) {
    this.#options = options;
    this.#logger = logger;
    this.#lastPosition = options.afterPosition;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Position of the last event handed to the handler (initially afterPosition). */
  get lastPosition(): number {
    return this.#lastPosition;
  }

  /** Registers a callback run once when the subscription stops (wakes a sleeping loop). */
  onStop(fn: () => void): void {
    if (this.#stopped) fn();
    else this.#onStop.push(fn);
  }

  async deliver(event: StoredEvent): Promise<DeliveryOutcome> {
    if (this.#stopped) return DeliveryOutcome.stopped;
    if (event.position <= this.#lastPosition) return DeliveryOutcome.skipped;
    try {
      await insideHandler.run(this, () => this.#options.handler(event));
    } catch (err) {
      this.fail(err);
      return DeliveryOutcome.stopped;
    }
    this.#lastPosition = event.position;
    return DeliveryOutcome.delivered;
  }

  /** Halts the subscription and reports `err` through onError (once; ignored after a stop). */
  fail(err: unknown): void {
    if (this.#stopped) return;
    this.stop();
    try {
      this.#options.onError(err);
    } catch (onErrorFailure) {
      this.#logger.error({ err: onErrorFailure, subscription: this.#options.name }, 'subscription onError threw');
    }
  }

  /** Marks the subscription stopped. Returns true when called from inside this subscription's handler. */
  stop(): boolean {
    if (!this.#stopped) {
      this.#stopped = true;
      for (const fn of this.#onStop.splice(0)) fn();
    }
    return insideHandler.getStore() === this;
  }
}
