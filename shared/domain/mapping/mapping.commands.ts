import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { SEQUENCES } from '../../contracts/ids.js';
import { handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { loadClient } from '../client/client.commands.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';
import { releaseLocalPort, reserveLocalPort } from '../localport/localport.commands.js';
import { releasePublicPort, reserveFirstFreePort, reservePublicPort, type PortRange } from '../port/port.commands.js';
import { allocateId } from '../sequence/sequence.commands.js';
import { freeSlot, takeSlot } from '../account/account.commands.js';
import { TIERS, type Quota } from '../account/account.decider.js';
import { loadUser } from '../user/user.commands.js';
import { mappingDecider, validateMappingShape, type CreateMapping, type MappingSpec, type MappingState } from './mapping.decider.js';
import { mappingStatusDecider } from './mapping-status.decider.js';
import { decideAndAppend } from '../append.js';
import type { EventData } from '../../contracts/events.js';

export function mappingStream(mappingId: number): string {
  return streamName(AGGREGATES.mapping, mappingId);
}

export function mappingStatusStream(mappingId: number): string {
  return streamName(AGGREGATES.mappingStatus, mappingId);
}

export async function loadMapping(store: EventStore, mappingId: number): Promise<MappingState> {
  return (await loadAggregate(store, mappingStream(mappingId), mappingDecider)).state;
}

export interface CreateMappingInput {
  userId: number;
  protocol: string;
  /** Set for a client-to-client mapping; null/absent for a public one. */
  sourceClientId?: number | null;
  targetClientId: number;
  targetHost: string;
  targetPort: number;
  localHost?: string | null;
  localPort?: number | null;
  /** Public mappings: an explicit port, or omitted to take the first free one of `publicPortRange`. */
  publicPort?: number | null;
  /** Ports the edge may open publicly; explicit ports must lie inside it too. */
  publicPortRange: PortRange;
  /** Flood limits (see MappingCreated); absent = the edge's default. */
  idleTimeout?: number | null;
  maxConnections?: number | null;
  maxPendingOpens?: number | null;
  /** The quota of a user whose account has no event yet (the server's default tier); default unlimited. */
  defaultQuota?: Quota;
}

export interface CreateMappingResult {
  mappingId: number;
  publicPort: number | null;
  /** Global position of MappingCreated. */
  position: number;
}

async function checkClient(store: EventStore, clientId: number, userId: number, field: string): Promise<void> {
  const client = await loadClient(store, clientId);
  if (!client.exists) {
    throw new RuleViolationError(DOMAIN_ERRORS.mappingClientNotFound, `client ${clientId} does not exist`, field);
  }
  if (client.userId !== userId) {
    throw new RuleViolationError(DOMAIN_ERRORS.mappingClientNotOwned, `client ${clientId} does not belong to user ${userId}`, field);
  }
}

/** The port a mapping holds exclusively: its public port, or its source client's local port. */
type HeldPort = { kind: 'public'; port: number } | { kind: 'local'; clientId: number; port: number };

function heldPort(m: Pick<MappingSpec, 'public_port' | 'source_client_id' | 'local_port'>): HeldPort | null {
  if (m.public_port !== null) return { kind: 'public', port: m.public_port };
  if (m.source_client_id !== null && m.local_port !== null) return { kind: 'local', clientId: m.source_client_id, port: m.local_port };
  return null;
}

function sameHeldPort(a: HeldPort, b: HeldPort | null): boolean {
  return b !== null && a.kind === b.kind && a.port === b.port && (a.kind === 'public' || (b.kind === 'local' && a.clientId === b.clientId));
}

function releaseHeldPort(store: EventStore, held: HeldPort, mappingId: number, meta: CommandMetadata): Promise<{ position: number }> {
  return held.kind === 'public'
    ? releasePublicPort(store, { port: held.port, mappingId }, meta)
    : releaseLocalPort(store, { clientId: held.clientId, port: held.port, mappingId }, meta);
}

/**
 * Creates a mapping: checks shape and references (loading the user and client aggregates), then
 * allocates the mapping id, reserves the port the mapping holds exclusively (the public port of a
 * public mapping; the source client's local_port of a client-to-client one) and appends
 * MappingCreated.
 *
 * Three aggregates are involved and NATS 2.9 has no multi-subject transaction, so this is a small
 * saga: if MappingCreated cannot be appended, the port is released again. A crash between the
 * steps can leave an unused mapping id (a gap, acceptable) or a port held by a mapping that never
 * came to exist. Such a port stays held (visible in its port stream) until an operator releases
 * it: `tunnox ctl ports release PORT` (services/cli/ctl-ports.ts; `--client` for a local port).
 */
export async function createMapping(store: EventStore, input: CreateMappingInput, meta: CommandMetadata): Promise<CreateMappingResult> {
  const sourceClientId = input.sourceClientId ?? null;
  const isPublic = sourceClientId === null;
  const range = input.publicPortRange;
  const explicitPort = input.publicPort ?? null;
  const draft = (mappingId: number, publicPort: number | null): CreateMapping['data'] => ({
    mapping_id: mappingId,
    user_id: input.userId,
    protocol: input.protocol,
    source_client_id: sourceClientId,
    target_client_id: input.targetClientId,
    target_host: input.targetHost,
    target_port: input.targetPort,
    local_host: input.localHost ?? null,
    local_port: input.localPort ?? null,
    public_port: publicPort,
    ...(input.idleTimeout != null ? { idle_timeout: input.idleTimeout } : {}),
    ...(input.maxConnections != null ? { max_connections: input.maxConnections } : {}),
    ...(input.maxPendingOpens != null ? { max_pending_opens: input.maxPendingOpens } : {}),
  });

  // Reject bad shapes before anything is allocated. A placeholder port stands in for one that
  // will be allocated, so the check sees a complete public mapping.
  const placeholderPort = isPublic && explicitPort === null ? range.min : explicitPort;
  validateMappingShape(draft(1, placeholderPort));
  if (isPublic && explicitPort !== null && (explicitPort < range.min || explicitPort > range.max)) {
    throw new RuleViolationError(DOMAIN_ERRORS.portOutOfRange, `public_port must be within ${range.min}-${range.max}`, 'public_port');
  }

  const owner = await loadUser(store, input.userId);
  if (!owner.exists) throw new RuleViolationError(DOMAIN_ERRORS.mappingUserNotFound, `user ${input.userId} does not exist`, 'user_id');
  await checkClient(store, input.targetClientId, input.userId, 'target_client_id');
  if (sourceClientId !== null) await checkClient(store, sourceClientId, input.userId, 'source_client_id');

  const { id: mappingId } = await allocateId(store, SEQUENCES.mapping, meta);
  // The quota is decided on the user's account aggregate: parallel creates cannot overshoot it.
  await takeSlot(store, { userId: input.userId, kind: 'mapping', id: mappingId, defaultQuota: input.defaultQuota ?? TIERS.unlimited }, meta);
  const giveSlotBack = (): Promise<unknown> => freeSlot(store, { userId: input.userId, kind: 'mapping', id: mappingId }, meta).catch(() => undefined);

  let publicPort: number | null = null;
  let held: HeldPort | null = null;
  try {
    if (isPublic) {
      if (explicitPort !== null) {
        await reservePublicPort(store, { port: explicitPort, mappingId }, meta);
        publicPort = explicitPort;
      } else {
        publicPort = (await reserveFirstFreePort(store, { range, mappingId }, meta)).port;
      }
      held = { kind: 'public', port: publicPort };
    } else if (input.localPort !== null && input.localPort !== undefined) {
      // validateMappingShape guarantees a local_port here; the reservation is the race-free check.
      await reserveLocalPort(store, { clientId: sourceClientId, port: input.localPort, mappingId }, meta);
      held = { kind: 'local', clientId: sourceClientId, port: input.localPort };
    }
  } catch (err) {
    await giveSlotBack();
    throw err;
  }

  try {
    const res = await handleCommand(
      store,
      mappingStream(mappingId),
      mappingDecider,
      { type: 'CreateMapping', data: draft(mappingId, publicPort) },
      meta,
    );
    return { mappingId, publicPort, position: res.position };
  } catch (err) {
    if (held !== null) {
      // Compensation is best effort; the original failure is what the caller must see. A timed-out
      // append may still have been stored: release only if no mapping holding this port was
      // recorded under our id, or two mappings could end up sharing the port.
      const port = held;
      await loadMapping(store, mappingId)
        .then((state) =>
          state.status === 'absent' || !sameHeldPort(port, heldPort(state.mapping)) ? releaseHeldPort(store, port, mappingId, meta) : undefined,
        )
        .catch(() => undefined);
    }
    if ((await loadMapping(store, mappingId).catch(() => undefined))?.status === 'absent') await giveSlotBack();
    throw err;
  }
}

/** Deletes a mapping, then frees the port it held (public port, or its source client's local port). Deleting a deleted or unknown mapping is a NotFoundError. */
export async function deleteMapping(
  store: EventStore,
  input: { mappingId: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number }> {
  let res;
  try {
    res = await handleCommand(
      store,
      mappingStream(input.mappingId),
      mappingDecider,
      { type: 'DeleteMapping', data: { mapping_id: input.mappingId } },
      meta,
      { expectedVersion: input.expectedVersion },
    );
  } catch (err) {
    if ((err as { code?: unknown }).code === DOMAIN_ERRORS.mappingNotFound) await finishInterruptedDelete(store, input.mappingId, meta);
    throw err;
  }
  let position = res.position;
  if (res.state.status === 'absent') return { position };
  // Cascades of MappingDeleted: free the port and the quota slot. A crash before they are done
  // leaves them held; deleting the mapping again finishes them (finishInterruptedDelete).
  const cascade = { ...meta, ...(res.event ? { causationId: res.event.id } : {}) };
  const held = heldPort(res.state.mapping);
  if (held !== null) {
    const released = await releaseUnlessHeldByOther(store, held, input.mappingId, cascade);
    position = Math.max(position, released?.position ?? 0);
  }
  const freed = await freeSlot(store, { userId: res.state.mapping.user_id, kind: 'mapping', id: input.mappingId }, cascade);
  return { position: Math.max(position, freed.position) };
}

/**
 * Releases the mapping's port; a port that is free or held by another mapping means there is
 * nothing of ours to release (already re-reserved after an interrupted delete, or a local port of
 * a mapping created before local ports were reserved).
 */
async function releaseUnlessHeldByOther(store: EventStore, held: HeldPort, mappingId: number, meta: CommandMetadata): Promise<{ position: number } | null> {
  try {
    return await releaseHeldPort(store, held, mappingId, meta);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === DOMAIN_ERRORS.portNotHeld || code === DOMAIN_ERRORS.localPortNotHeld) return null;
    throw err;
  }
}

/**
 * A previous delete may have recorded MappingDeleted and then failed to free the port: a retried
 * delete finishes that job before answering "not found" as usual. Only this rare path pays the
 * extra read.
 */
async function finishInterruptedDelete(store: EventStore, mappingId: number, meta: CommandMetadata): Promise<void> {
  const state = await loadMapping(store, mappingId);
  if (state.status !== 'deleted') return;
  const held = heldPort(state.mapping);
  if (held !== null) await releaseUnlessHeldByOther(store, held, mappingId, meta);
  await freeSlot(store, { userId: state.mapping.user_id, kind: 'mapping', id: mappingId }, meta);
}

/**
 * Rotates a mapping's secret: records its next secret generation (MappingSecretRotated). Nothing
 * secret is written; edges derive the new secret and push it to the mapping's agents.
 */
export async function rotateMappingSecret(
  store: EventStore,
  input: { mappingId: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number; generation: number }> {
  const res = await handleCommand(
    store,
    mappingStream(input.mappingId),
    mappingDecider,
    { type: 'RotateMappingSecret', data: { mapping_id: input.mappingId } },
    meta,
    { expectedVersion: input.expectedVersion },
  );
  if (res.state.status !== 'active') throw new Error(`mapping ${input.mappingId} is not active after its rotation`);
  return { position: res.position, generation: res.state.mapping.secret_generation };
}

/**
 * PATCH /mappings/{id}: enable or disable it, or point it at another target (MappingUpdated; a
 * request that changes nothing appends nothing). Returns the mapping after the command.
 */
export async function updateMapping(
  store: EventStore,
  input: { mappingId: number; enabled?: boolean; targetHost?: string; targetPort?: number; expectedVersion?: number },
  meta: CommandMetadata,
): Promise<{ position: number; changed: boolean; publicPort: number | null }> {
  const res = await handleCommand(
    store,
    mappingStream(input.mappingId),
    mappingDecider,
    {
      type: 'UpdateMapping',
      data: { mapping_id: input.mappingId, enabled: input.enabled, target_host: input.targetHost, target_port: input.targetPort },
    },
    meta,
    { expectedVersion: input.expectedVersion },
  );
  if (res.state.status !== 'active') throw new Error(`mapping ${input.mappingId} is not active after its update`);
  return { position: res.position, changed: res.event !== null, publicPort: res.state.mapping.public_port };
}

/**
 * Records what an agent reported about its side of a mapping (see mapping-status.decider.ts): no
 * revision check, nothing loaded, the mapping's own stream untouched.
 */
export async function recordMappingAgentStatus(
  store: EventStore,
  input: EventData<'MappingAgentStatusReported'>,
  meta: CommandMetadata,
): Promise<{ position: number }> {
  const res = await decideAndAppend(
    store,
    mappingStatusStream(input.mapping_id),
    mappingStatusDecider,
    mappingStatusDecider.initialState(),
    { type: 'RecordMappingAgentStatus', data: input },
    meta,
    'any',
  );
  if (!res) throw new Error('mapping-status decider decided nothing');
  return res;
}
