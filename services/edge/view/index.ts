export { MemoryEdgeView, type ClientConfig, type ClientState, type EdgeView, type EntityUpdate, type MappingState, type ViewChange } from './view.js';
export { openJetStreamEdgeView, startJetStreamViewFeed, type JetStreamViewFeed } from './jetstream.js';
export { startReadModelViewFeed, readSnapshot, type ReadModelViewFeed } from './postgres.js';
