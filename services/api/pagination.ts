import { z } from 'zod';

/*
 * Keyset pagination for list endpoints: rows in ascending id order, `limit` per page (1–500,
 * default 50), and an opaque `next_cursor` naming the last id of the page (null on the last page).
 * A cursor is stable under concurrent inserts and deletes: a page never repeats or skips a row
 * that existed for the whole walk.
 */

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

const CURSOR_PREFIX = 'id:';

export function encodeCursor(lastId: number): string {
  return Buffer.from(`${CURSOR_PREFIX}${lastId}`).toString('base64url');
}

/** Query parameters every list takes. Strings, as query strings are; canonical decimal only. */
export const PageQuery = {
  limit: z
    .string()
    .regex(/^[1-9][0-9]{0,3}$/, `must be a whole number from 1 to ${MAX_PAGE_SIZE}`)
    .transform(Number)
    .pipe(z.number().max(MAX_PAGE_SIZE, `must be a whole number from 1 to ${MAX_PAGE_SIZE}`))
    .optional()
    .describe(`page size, 1–${MAX_PAGE_SIZE} (default ${DEFAULT_PAGE_SIZE})`),
  cursor: z
    .string()
    .max(64)
    .transform((value, ctx) => {
      const text = /^[A-Za-z0-9_-]+$/.test(value) ? Buffer.from(value, 'base64url').toString('utf8') : '';
      const m = /^id:([1-9][0-9]{0,15})$/.exec(text);
      if (!m || encodeCursor(Number(m[1])) !== value) {
        ctx.addIssue({ code: 'custom', message: 'not a cursor this API issued (pass next_cursor from the previous page)' });
        return z.NEVER;
      }
      return Number(m[1]);
    })
    .optional()
    .describe('next_cursor of the previous page'),
};

export const NextCursor = z.string().nullable().describe('pass as ?cursor= for the next page; null on the last page');

/** Splits the limit+1 rows a page query fetched into the page and its next cursor. */
export function page<T>(rows: T[], limit: number, idOf: (row: T) => number): { items: T[]; next_cursor: string | null } {
  if (rows.length <= limit) return { items: rows, next_cursor: null };
  const items = rows.slice(0, limit);
  return { items, next_cursor: encodeCursor(idOf(items[items.length - 1]!)) };
}
