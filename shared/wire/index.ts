export * from './packets.js';
export * from './codec.js';
export * from './messages.js';
export * from './proof.js';
export * from './codes.js';
