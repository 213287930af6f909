import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * What free text may contain, defined once for the API (400 naming the field) and the event store
 * (which refuses an event that could never be projected).
 *
 * - Everywhere: no U+0000 (PostgreSQL text and jsonb cannot hold it) and no lone surrogate (not
 *   Unicode; jsonb rejects the `\udXXX` escape JSON.stringify writes for it). An event carrying
 *   either would halt the projector for good, so the event store refuses it too.
 * - Names (usernames, client names): additionally no control characters (C0, DEL, C1), no line or
 *   paragraph separators and no bidi formatting characters (marks, embeddings, overrides,
 *   isolates), which can make one name display as another (U+202E "right-to-left override").
 * - Descriptions: may hold tab, CR and LF (and bidi formatting, which legitimate mixed-direction
 *   prose needs), but no other control character.
 * - Hosts: a DNS name or an IP literal, ASCII only (IDNs in their punycode form).
 */

// In a `u` regex a lone surrogate is a code point of category Cs; a proper pair is one astral code point.
const LONE_SURROGATE = /\p{Cs}/u;
const NUL = '\u0000';
const NAME_FORBIDDEN = /[\p{Cc}\p{Cs}\p{Zl}\p{Zp}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u;
const DESCRIPTION_FORBIDDEN = /[\p{Cs}\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;
// Labels of letters, digits, hyphen and underscore (container and service-discovery names use
// underscores and resolve fine), no leading or trailing hyphen; an optional final dot.
const HOST_LABEL = /^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$/;

export type TextProblem = { path: string; reason: string };

function stringProblem(s: string): string | null {
  if (s.includes(NUL)) return 'contains U+0000 (NUL)';
  if (LONE_SURROGATE.test(s)) return 'contains a lone UTF-16 surrogate';
  return null;
}

/**
 * The first string (value or object key) anywhere in a JSON-like value that no store or read model
 * can hold, with its dotted path; null when there is none. Iterative, so deep nesting cannot
 * exhaust the stack.
 */
export function findUnstorableText(value: unknown, root = ''): TextProblem | null {
  const stack: Array<{ v: unknown; path: string }> = [{ v: value, path: root }];
  while (stack.length > 0) {
    const { v, path } = stack.pop()!;
    if (typeof v === 'string') {
      const reason = stringProblem(v);
      if (reason) return { path: path || '(value)', reason };
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: `${path}[${i}]` });
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, child] of Object.entries(v).reverse()) {
        const childPath = path ? `${path}.${k}` : k;
        const reason = stringProblem(k);
        if (reason) return { path: childPath, reason: `key ${reason}` };
        stack.push({ v: child, path: childPath });
      }
    }
  }
  return null;
}

function describeForbidden(s: string, forbidden: RegExp): string | null {
  const m = forbidden.exec(s);
  if (!m) return null;
  const cp = m[0].codePointAt(0)!;
  return `must not contain U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

function refineText(forbidden: RegExp) {
  return (s: string, ctx: z.RefinementCtx): void => {
    const message = describeForbidden(s, forbidden);
    if (message) ctx.addIssue({ code: 'custom', message });
  };
}

/** A username or display name: trimmed, 1..max characters, no controls, separators or bidi formatting. */
export function nameText(max: number) {
  return z.string().trim().min(1).max(max).superRefine(refineText(NAME_FORBIDDEN));
}

/** Free prose: up to max characters; tab, CR, LF allowed, other control characters not. */
export function descriptionText(max: number) {
  return z.string().max(max).superRefine(refineText(DESCRIPTION_FORBIDDEN));
}

/** True for a DNS host name (ASCII labels, 253 characters at most) or an IPv4/IPv6 literal. */
export function isHostName(s: string): boolean {
  if (isIP(s) !== 0) return true;
  const name = s.endsWith('.') ? s.slice(0, -1) : s;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  // An all-numeric dotted name that is not a valid IPv4 literal (999.1.1.1, 1.2.3) is a typo, not a host.
  if (labels.every((l) => /^\d+$/.test(l))) return false;
  return labels.every((l) => HOST_LABEL.test(l));
}

/** A host an agent dials or binds: a DNS name or an IP literal (no brackets, ports or spaces). */
export const HostText = z
  .string()
  .min(1)
  .max(253)
  .refine(isHostName, { message: 'must be a host name or an IP address' });
