/** ID ranges from DESIGN.md section 4. All numeric except node ids. */
export const ID_RANGES = {
  user: { min: 100_000_001, max: 999_999_999 },
  anonymousClient: { min: 200_000_000, max: 299_999_999 },
  managedClient: { min: 600_000_000, max: 999_999_999 },
  mapping: { min: 1001, max: Number.MAX_SAFE_INTEGER },
} as const;

/** Sequences allocated through the event-sourced id allocator (see shared/contracts/events.ts IdAllocated). */
export const SEQUENCES = {
  user: 'user',
  managedClient: 'managed-client',
  mapping: 'mapping',
} as const;
export type SequenceName = (typeof SEQUENCES)[keyof typeof SEQUENCES];

export const SEQUENCE_START: Record<SequenceName, number> = {
  user: ID_RANGES.user.min,
  'managed-client': ID_RANGES.managedClient.min,
  mapping: ID_RANGES.mapping.min,
};

export const SEQUENCE_MAX: Record<SequenceName, number> = {
  user: ID_RANGES.user.max,
  'managed-client': ID_RANGES.managedClient.max,
  mapping: ID_RANGES.mapping.max,
};

export function isAnonymousClientId(id: number): boolean {
  return id >= ID_RANGES.anonymousClient.min && id <= ID_RANGES.anonymousClient.max;
}

export function isManagedClientId(id: number): boolean {
  return id >= ID_RANGES.managedClient.min && id <= ID_RANGES.managedClient.max;
}

/** Node ids are `node-001` … `node-1000`. */
export function nodeIdFor(n: number): string {
  return `node-${String(n).padStart(3, '0')}`;
}
