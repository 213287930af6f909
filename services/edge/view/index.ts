export { MemoryEdgeView, type ClientConfig, type ClientState, type EdgeView, type EntityUpdate, type MappingState, type ViewChange } from './view.js';
export { startJetStreamViewFeed, type JetStreamViewFeed } from './jetstream.js';
export { startReadModelViewFeed, readSnapshot, type ReadModelViewFeed } from './postgres.js';
