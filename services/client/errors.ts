import { TunnoxError } from '../../shared/platform/errors.js';

/** A condition the agent cannot recover from by reconnecting (bad credentials, replaced, ...). */
export class AgentFatalError extends TunnoxError {}
