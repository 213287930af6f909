import { z } from 'zod';
import { ID_RANGES } from '../../shared/contracts/ids.js';

/** Shared API schemas. Field names are snake_case, as in the seed API. */

export const ProblemSchema = z
  .object({
    type: z.string().describe('URI naming the problem kind; stable, derived from `code`'),
    title: z.string(),
    status: z.number().int(),
    code: z.string().describe('Stable machine-readable code, TNX_<AREA>_<WHAT>'),
    detail: z.string(),
    field: z.string().optional().describe('The offending input field, when there is one'),
    errors: z
      .array(z.object({ field: z.string().optional(), message: z.string() }))
      .optional()
      .describe('Every validation issue, for 400 responses'),
  })
  .describe('RFC 9457 problem details');
export type Problem = z.infer<typeof ProblemSchema>;

const userId = () => z.number().int().min(ID_RANGES.user.min).max(ID_RANGES.user.max);
const clientId = () => z.number().int().min(ID_RANGES.anonymousClient.min).max(ID_RANGES.managedClient.max);
const mappingId = () => z.number().int().min(ID_RANGES.mapping.min).max(ID_RANGES.mapping.max);

/** Ids in JSON bodies and responses: numbers only (no "123" strings). */
export const UserId = userId();
export const ClientId = clientId();
export const MappingId = mappingId();
/** Ids in URL paths arrive as strings. */
export const UserIdParam = z.coerce.number().pipe(userId());
export const ClientIdParam = z.coerce.number().pipe(clientId());
export const MappingIdParam = z.coerce.number().pipe(mappingId());
export const Port = z.number().int().min(1).max(65535);
export const Timestamp = z.string().describe('RFC 3339 timestamp');
export const Host = z.string().trim().min(1).max(253);

/** Problem responses every /api/v1 route can give; merged into each route's `response`. */
export const COMMON_PROBLEMS = {
  400: ProblemSchema,
  401: ProblemSchema,
  500: ProblemSchema,
  503: ProblemSchema,
} as const;

export function iso(d: Date | string): string {
  return d instanceof Date ? d.toISOString() : new Date(d).toISOString();
}

/** Weak ETag from an aggregate version. */
export function etag(version: number): string {
  return `W/"${version}"`;
}
