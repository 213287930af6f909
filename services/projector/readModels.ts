import { apiKeysProjection } from './apikeys.projection.js';
import { clientsProjection } from './clients.projection.js';
import { mappingsProjection } from './mappings.projection.js';
import type { Projection } from './projection.js';
import { usersProjection } from './users.projection.js';

/** Checkpoint (and durable subscriber) name of the read-model projector. */
export const READ_MODEL_PROJECTION = 'read-models';

/**
 * The projections that make up the read models, sharing one checkpoint and one transaction per
 * event. Order matters only where handlers touch the same rows: clients before mappings, so a
 * mapping's config-version bump sees a client registered by an earlier event.
 */
export const READ_MODEL_PROJECTIONS: readonly Projection[] = [usersProjection, clientsProjection, mappingsProjection, apiKeysProjection];

/** Every table READ_MODEL_PROJECTIONS write, children before parents. */
export const READ_MODEL_TABLES = ['mappings', 'clients', 'users', 'api_keys'] as const;
