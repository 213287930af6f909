import { z } from 'zod';
import { ID_RANGES } from '../../shared/contracts/ids.js';
import { HostText, descriptionText, nameText } from '../../shared/contracts/text.js';
import { ValidationError } from '../../shared/platform/errors.js';

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
/**
 * Ids in URL paths arrive as strings and must be canonical decimal: Number() would also read
 * `0x5F5E101`, `1.00000001e8`, `+100000001`, ` 100000001` or `00100000001` as the same id, and one
 * resource with many spellings defeats caches, logs and any rule keyed on the path.
 */
const canonicalId = (inRange: z.ZodNumber) =>
  z
    .string()
    .regex(/^[1-9][0-9]{0,15}$/, 'must be a decimal id without sign, leading zeros or spaces')
    .transform(Number)
    .pipe(inRange);
export const UserIdParam = canonicalId(userId());
export const ClientIdParam = canonicalId(clientId());
export const MappingIdParam = canonicalId(mappingId());
export const Port = z.number().int().min(1).max(65535);
export const Timestamp = z.string().describe('RFC 3339 timestamp');
/** Free-text field kinds (shared/contracts/text.ts says what each admits). */
export const Host = HostText;
export const Username = nameText(64);
export const ClientName = nameText(128);
export const ClientDescription = descriptionText(1024);

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

/**
 * The aggregate version an `If-Match` header requires, or undefined when there is none (or `*`:
 * any current version). Accepts the ETags this API hands out (`W/"7"`) and their strong form
 * (`"7"`); If-Match compares weakly here because the version is exactly what the tag encodes.
 * Anything else, including a list of several tags, is a ValidationError naming the header.
 */
export function ifMatchVersion(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const v = Array.isArray(header) ? header.join(',') : header;
  if (v.trim() === '*') return undefined;
  const m = /^\s*(?:W\/)?"(\d{1,9})"\s*$/.exec(v);
  if (!m) throw new ValidationError('If-Match', 'If-Match must be one ETag as returned by a GET (e.g. W/"3"), or *');
  return Number(m[1]);
}

/** The optional If-Match request header, for the OpenAPI document (parsed by ifMatchVersion). */
export const IfMatchHeader = z.object({
  'if-match': z.string().optional().describe('An ETag from a GET of this resource (W/"N"): the change applies only if it is still current, else 412'),
});
