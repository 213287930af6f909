import { hkdfSync, randomBytes } from 'node:crypto';

/**
 * Mapping secrets are derived, never stored: no event, read model or state-stream message holds
 * one. Each mapping's secret (the key half agents prove tunnel opens with, shared/wire/proof.ts) is
 *
 *   secret = hex(HKDF-SHA256(ikm = master key, salt = MAPPING_SECRET_SALT,
 *                            info = "<mapping id>|<generation>", 32 bytes))
 *
 * computed where it is needed: by the edge when it pushes an agent's config and when it verifies a
 * TunnelOpen. `generation` starts at 1 and is recorded in the mapping's events (MappingCreated
 * v2): rotating a mapping's secret is a new generation, nothing secret is written.
 *
 * The master key: HKDF-SHA256 of `--cluster-secret` (info MAPPING_MASTER_KEY_LABEL), the same on
 * every node of a cluster; a server without one generates 32 random bytes once and keeps them
 * (mode 0600) as `mapping-master-key` in its data dir (services/cli/server.ts).
 */
export const MAPPING_MASTER_KEY_LABEL = 'tunnox mapping master key v1';
export const MAPPING_SECRET_SALT = 'tunnox mapping secret v1';
export const MAPPING_MASTER_KEY_BYTES = 32;

/** The master key for a cluster secret: never the secret itself (HKDF with its own label). */
export function deriveMappingMasterKey(clusterSecret: string | Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', clusterSecret, Buffer.alloc(0), MAPPING_MASTER_KEY_LABEL, MAPPING_MASTER_KEY_BYTES));
}

/** A random master key, for a server that derives secrets alone (kept in its data dir). */
export function generateMappingMasterKey(): Buffer {
  return randomBytes(MAPPING_MASTER_KEY_BYTES);
}

/** The secret of one mapping generation: 32 bytes, hex (64 characters). */
export function deriveMappingSecret(masterKey: Buffer, mappingId: number, generation: number): string {
  if (!Number.isSafeInteger(mappingId) || mappingId < 1) throw new RangeError(`invalid mapping id ${mappingId}`);
  if (!Number.isSafeInteger(generation) || generation < 1) throw new RangeError(`invalid secret generation ${generation}`);
  if (masterKey.length < MAPPING_MASTER_KEY_BYTES) throw new RangeError('the mapping master key must be at least 32 bytes');
  return Buffer.from(hkdfSync('sha256', masterKey, MAPPING_SECRET_SALT, `${mappingId}|${generation}`, 32)).toString('hex');
}

/**
 * The edge's deriver: one master key, secrets by mapping. HKDF is two HMACs, cheaper than the
 * proof check it feeds, so nothing is cached (a cache would only be one more place holding secrets).
 */
export class MappingSecrets {
  readonly #key: Buffer;

  constructor(masterKey: Buffer) {
    if (masterKey.length < MAPPING_MASTER_KEY_BYTES) throw new RangeError('the mapping master key must be at least 32 bytes');
    this.#key = Buffer.from(masterKey);
  }

  secretOf(m: { readonly mapping_id: number; readonly secret_generation: number }): string {
    return deriveMappingSecret(this.#key, m.mapping_id, m.secret_generation);
  }
}
