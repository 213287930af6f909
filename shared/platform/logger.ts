import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/** Keys that must never reach a log line in clear. */
export const REDACT_PATHS = [
  'authCode', 'auth_code', 'secret', 'secretKey', 'secret_key', 'apiKey', 'api_key', 'password',
  'authorization', 'req.headers.authorization', 'proof',
  '*.authCode', '*.auth_code', '*.secret', '*.secretKey', '*.secret_key', '*.apiKey', '*.api_key', '*.proof',
  '*.*.auth_code', '*.*.secret_key', '*.*.authCode', '*.*.secretKey', 'mappings[*].secret_key', '*.mappings[*].secret_key',
  'session_token', 'sessionToken', '*.session_token', '*.sessionToken', 'payload.token', '*.payload.token',
  'tunnel_key', 'tunnelKey', '*.tunnel_key', '*.tunnelKey', 'ticket', '*.ticket', 'payload.ticket', '*.payload.ticket',
];

export interface LoggerConfig {
  level?: string;
  name?: string;
  base?: Record<string, unknown>;
}

/** The one place a pino root logger is built. Stable field names: nodeId, clientId, mappingId, tunnelId. */
export function createLogger(config: LoggerConfig = {}, destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level: config.level ?? 'info',
    name: config.name ?? 'tunnox',
    base: { pid: process.pid, ...config.base },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that discards everything, for tests that do not assert on logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
