import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { errorMessage } from '../../shared/platform/errors.js';
import { AgentFatalError } from './errors.js';

/** The file an anonymous agent keeps its identity in. Unknown keys are refused (rathole habit). */
const CredentialsFile = z.strictObject({
  server: z.string().min(1),
  client_id: z.number().int().positive(),
  auth_code: z.string().min(1),
});
export type Credentials = z.infer<typeof CredentialsFile>;

/** Returns undefined when there is no file; throws AgentFatalError when it exists but is unusable. */
export async function loadCredentials(path: string): Promise<Credentials | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AgentFatalError('TNX_AGENT_CREDENTIALS_UNREADABLE', `cannot read credentials file ${path}: ${errorMessage(err)}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new AgentFatalError('TNX_AGENT_CREDENTIALS_INVALID', `credentials file ${path} is not valid JSON; fix it, or delete it to register a new anonymous client`, { cause: err });
  }
  const parsed = CredentialsFile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AgentFatalError(
      'TNX_AGENT_CREDENTIALS_INVALID',
      `credentials file ${path} is invalid (${issue?.path.join('.') || 'root'}: ${issue?.message}); fix it, or delete it to register a new anonymous client`,
    );
  }
  return parsed.data;
}

/** Writes atomically (temp file + rename), readable by the owner only; creates the directory. */
export async function saveCredentials(path: string, creds: Credentials): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}
