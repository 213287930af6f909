export * from './errors.js';
export * from './auth.js';
export * from './stream.js';
export * from './server.js';
export * from './pool.js';
export { bridgeProtoPath, MAX_FRAME_PAYLOAD } from './proto.js';
