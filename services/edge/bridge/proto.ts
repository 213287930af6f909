// The bridge contract, loaded at runtime from proto/ (no generated code). The TS shapes below
// mirror bridge.proto as proto-loader decodes it (keepCase, longs as strings, oneofs, defaults).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';

const PROTO_REL = join('proto', 'tunnox', 'bridge', 'v1', 'bridge.proto');

/** Finds proto/ from this module's location, whether it runs from the sources or from dist/. */
export function bridgeProtoPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, PROTO_REL);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new Error(`bridge.proto not found above ${dirname(fileURLToPath(import.meta.url))}`);
    dir = up;
  }
}

export interface OpenFrame {
  tunnel_id: string;
  /** uint64 on the wire; strings here so no id loses precision. */
  mapping_id: string;
  target_client_id: string;
  source_node_id: string;
  target_node_id: string;
  ts_ms: string;
  nonce: string;
  mac: string;
}
export interface OpenAckFrame {
  ok: boolean;
  error_code: string;
  error_message: string;
}
export interface DataFrame {
  payload: Buffer;
  fin: boolean;
}
export interface CreditFrame {
  bytes: number;
}
/** What a BridgeFrame decodes to: exactly one of the oneof fields is set and `kind` names it. */
export type BridgeFrame =
  | { kind: 'open'; open: OpenFrame }
  | { kind: 'open_ack'; open_ack: OpenAckFrame }
  | { kind: 'data'; data: DataFrame }
  | { kind: 'credit'; credit: CreditFrame };
/** What may be written: proto-loader's encoder accepts numbers for uint64 and ignores `kind`. */
export type OutFrame =
  | { open: Omit<OpenFrame, 'mapping_id' | 'target_client_id' | 'ts_ms'> & { mapping_id: number | string; target_client_id: number | string; ts_ms: number | string } }
  | { open_ack: OpenAckFrame }
  | { data: { payload?: Buffer; fin?: boolean } };

const LOAD_OPTIONS: Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let cached: ServiceDefinition | undefined;

/** The Bridge service definition (for Server.addService and makeGenericClientConstructor). */
export function bridgeService(): ServiceDefinition {
  if (cached) return cached;
  const pkg = loadPackageDefinition(loadSync(bridgeProtoPath(), LOAD_OPTIONS)) as unknown as {
    tunnox: { bridge: { v1: { Bridge: { service: ServiceDefinition } } } };
  };
  cached = pkg.tunnox.bridge.v1.Bridge.service;
  return cached;
}

/** Largest payload per Data frame: bounds the bytes one queued frame can hold. */
export const MAX_FRAME_PAYLOAD = 128 * 1024;
