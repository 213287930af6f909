export { API_PREFIX, buildApp, type ApiDeps } from './app.js';
export type { ApiMetrics } from './deps.js';
export { API_ERRORS } from './errors.js';
