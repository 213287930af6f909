/**
 * Change notices published after the projector commits (DESIGN.md: "config-update subjects").
 * A notice says *what changed and as of which position*; receivers re-read the read model, so a
 * lost or duplicated notice can only delay, never corrupt, what an agent sees. Agents resync their
 * whole config on reconnect anyway.
 */
export type ChangeNotice =
  /** The mapping set that involves this client changed; `version` is the projected position. */
  | { readonly kind: 'client-config'; readonly clientId: number; readonly version: number }
  /** The set of public mappings (edge listeners) changed. */
  | { readonly kind: 'public-mappings'; readonly version: number }
  /** The named projection has committed up to `position`. */
  | { readonly kind: 'projection'; readonly name: string; readonly position: number };

export interface ChangeBus {
  publish(notice: ChangeNotice): Promise<void>;
  /** Returns an unsubscribe function. Handlers must not throw. */
  subscribe(handler: (notice: ChangeNotice) => void): () => void;
  close(): Promise<void>;
}
