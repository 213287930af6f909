import type { DomainEvent, TypedStoredEvent } from '../contracts/events.js';

/**
 * Emmett-style decider: pure functions, no I/O. Time and generated ids come in through the command
 * (its metadata), so a retried decision is deterministic. At most one event per command (NATS 2.9
 * has no atomic multi-message publish). Deciders import nothing from the event store: the command
 * handler (shared/eventstore/command.ts) runs them.
 */
export interface Decider<State, Cmd> {
  readonly initialState: () => State;
  readonly evolve: (state: State, event: TypedStoredEvent) => State;
  /** Returns the events to append (0 or 1), or throws a DomainError / NotFoundError. */
  readonly decide: (command: Cmd, state: State) => readonly DomainEvent[];
}
