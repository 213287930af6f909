import type { Migration } from 'kysely';
import * as m0001 from './0001_init.js';
import * as m0002 from './0002_mapping_agent_status.js';
import * as m0003 from './0003_state_outbox.js';
import * as m0004 from './0004_client_credentials.js';
import * as m0005 from './0005_api_idempotency.js';
import * as m0006 from './0006_derived_mapping_secrets.js';
import * as m0007 from './0007_api_keys.js';
import * as m0008 from './0008_mapping_limits.js';

/** All migrations, in order. Names are permanent once released. */
export const migrations: Record<string, Migration> = {
  '0001_init': m0001,
  '0002_mapping_agent_status': m0002,
  '0003_state_outbox': m0003,
  '0004_client_credentials': m0004,
  '0005_api_idempotency': m0005,
  '0006_derived_mapping_secrets': m0006,
  '0007_api_keys': m0007,
  '0008_mapping_limits': m0008,
};
