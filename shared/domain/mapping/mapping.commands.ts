import { randomBytes } from 'node:crypto';
import { streamName } from '../../contracts/envelope.js';
import { AGGREGATES } from '../../contracts/events.js';
import { SEQUENCES } from '../../contracts/ids.js';
import { handleCommand, loadAggregate, type CommandMetadata } from '../../eventstore/command.js';
import type { EventStore } from '../../eventstore/types.js';
import { loadClient } from '../client/client.commands.js';
import { DOMAIN_ERRORS, RuleViolationError } from '../errors.js';
import { releasePublicPort, reserveFirstFreePort, reservePublicPort, type PortRange } from '../port/port.commands.js';
import { allocateId } from '../sequence/sequence.commands.js';
import { loadUser } from '../user/user.commands.js';
import { mappingDecider, validateMappingShape, type CreateMapping, type MappingState } from './mapping.decider.js';

export function mappingStream(mappingId: number): string {
  return streamName(AGGREGATES.mapping, mappingId);
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
}

export interface CreateMappingResult {
  mappingId: number;
  publicPort: number | null;
  /** Global position of MappingCreated. */
  position: number;
}

/** 32 random bytes, hex: the HMAC key agents use to prove tunnel opens for this mapping. */
function newSecretKey(): string {
  return randomBytes(32).toString('hex');
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

/**
 * Creates a mapping: checks shape and references (loading the user and client aggregates), then
 * allocates the mapping id, reserves the public port (public mappings) and appends MappingCreated.
 *
 * Three aggregates are involved and NATS 2.9 has no multi-subject transaction, so this is a small
 * saga: if MappingCreated cannot be appended, the port is released again. A crash between the
 * steps can leave an unused mapping id (a gap, acceptable) or a port held by a mapping that never
 * came to exist (released by an operator; visible in the port stream).
 */
export async function createMapping(store: EventStore, input: CreateMappingInput, meta: CommandMetadata): Promise<CreateMappingResult> {
  const sourceClientId = input.sourceClientId ?? null;
  const isPublic = sourceClientId === null;
  const range = input.publicPortRange;
  const explicitPort = input.publicPort ?? null;
  const draft = (mappingId: number, publicPort: number | null, secretKey: string): CreateMapping['data'] => ({
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
    secret_key: secretKey,
  });

  // Reject bad shapes before anything is allocated. A placeholder port stands in for one that
  // will be allocated, so the check sees a complete public mapping.
  const placeholderPort = isPublic && explicitPort === null ? range.min : explicitPort;
  validateMappingShape(draft(1, placeholderPort, newSecretKey()));
  if (isPublic && explicitPort !== null && (explicitPort < range.min || explicitPort > range.max)) {
    throw new RuleViolationError(DOMAIN_ERRORS.portOutOfRange, `public_port must be within ${range.min}-${range.max}`, 'public_port');
  }

  const owner = await loadUser(store, input.userId);
  if (!owner.exists) throw new RuleViolationError(DOMAIN_ERRORS.mappingUserNotFound, `user ${input.userId} does not exist`, 'user_id');
  await checkClient(store, input.targetClientId, input.userId, 'target_client_id');
  if (sourceClientId !== null) await checkClient(store, sourceClientId, input.userId, 'source_client_id');

  const { id: mappingId } = await allocateId(store, SEQUENCES.mapping, meta);

  let publicPort: number | null = null;
  if (isPublic) {
    if (explicitPort !== null) {
      await reservePublicPort(store, { port: explicitPort, mappingId }, meta);
      publicPort = explicitPort;
    } else {
      publicPort = (await reserveFirstFreePort(store, { range, mappingId }, meta)).port;
    }
  }

  try {
    const res = await handleCommand(
      store,
      mappingStream(mappingId),
      mappingDecider,
      { type: 'CreateMapping', data: draft(mappingId, publicPort, newSecretKey()) },
      meta,
    );
    return { mappingId, publicPort, position: res.position };
  } catch (err) {
    if (publicPort !== null) {
      // Compensation is best effort; the original failure is what the caller must see. A timed-out
      // append may still have been stored: release only if no mapping with this port was recorded
      // under our id, or two mappings could end up sharing the port.
      const port = publicPort;
      await loadMapping(store, mappingId)
        .then((state) =>
          state.status === 'absent' || state.mapping.public_port !== port ? releasePublicPort(store, { port, mappingId }, meta) : undefined,
        )
        .catch(() => undefined);
    }
    throw err;
  }
}

/** Deletes a mapping, then frees its public port. Deleting a deleted or unknown mapping is a NotFoundError. */
export async function deleteMapping(store: EventStore, input: { mappingId: number }, meta: CommandMetadata): Promise<{ position: number }> {
  let res;
  try {
    res = await handleCommand(
      store,
      mappingStream(input.mappingId),
      mappingDecider,
      { type: 'DeleteMapping', data: { mapping_id: input.mappingId } },
      meta,
    );
  } catch (err) {
    if ((err as { code?: unknown }).code === DOMAIN_ERRORS.mappingNotFound) await finishInterruptedDelete(store, input.mappingId, meta);
    throw err;
  }
  let position = res.position;
  const port = res.state.status === 'absent' ? null : res.state.mapping.public_port;
  if (port !== null) {
    // A crash before this line leaves the port held by a deleted mapping (see createMapping).
    const released = await releasePublicPort(store, { port, mappingId: input.mappingId }, meta);
    position = Math.max(position, released.position);
  }
  return { position };
}

/**
 * A previous delete may have recorded MappingDeleted and then failed to free the port: a retried
 * delete finishes that job before answering "not found" as usual. Only this rare path pays the
 * extra read.
 */
async function finishInterruptedDelete(store: EventStore, mappingId: number, meta: CommandMetadata): Promise<void> {
  const state = await loadMapping(store, mappingId);
  if (state.status !== 'deleted' || state.mapping.public_port === null) return;
  await releasePublicPort(store, { port: state.mapping.public_port, mappingId }, meta).catch((err: unknown) => {
    // Already re-reserved by another mapping: nothing of ours to release.
    if ((err as { code?: unknown }).code !== DOMAIN_ERRORS.portNotHeld) throw err;
  });
}
