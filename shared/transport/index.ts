export * from './conn.js';
export * from './url.js';
export * from './cert.js';
export * from './trust.js';
export * from './proxy.js';
export * from './ws.js';
export * from './accept.js';
export * from './dial.js';
