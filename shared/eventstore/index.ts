export * from './types.js';
export * from './errors.js';
export * from './command.js';
export { PostgresEventStore, EVENTS_CHANNEL, type PostgresEventStoreOptions } from './postgres.js';
export { openJetStreamEventStore, VERSION_HEADER, type JetStreamEventStoreOptions } from './jetstream.js';
