import t from 'tap';
import { tunnelScenario } from './scenario.js';

// Standalone mode: one process, embedded PostgreSQL in the data dir, PostgreSQL event log.
t.test('standalone server: API, pushed config and TCP tunnels end to end', (t) => tunnelScenario(t, []));
