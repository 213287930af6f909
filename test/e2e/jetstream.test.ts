import t from 'tap';
import { createTestDatabase, uniqueName } from '../../shared/testkit/pg.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { tunnelScenario } from './scenario.js';

// JetStream mode: NATS JetStream event log (unique stream/subjects per run) + external PostgreSQL.
t.test('JetStream server: API, pushed config and TCP tunnels end to end', async (t) => {
  const database = await createTestDatabase('tnx_e2e', false);
  const stream = uniqueName('TNX_E2E').toUpperCase();
  t.teardown(async () => {
    const nc = await connect({ servers: TEST_NATS_URL });
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      if (s.config.name === stream || s.config.name.startsWith(`KV_${stream.toLowerCase()}`)) await jsm.streams.delete(s.config.name);
    }
    await nc.close();
    await database.drop();
  });
  await tunnelScenario(t, ['--nats', TEST_NATS_URL, '--database', database.url, '--stream', stream, '--subject-prefix', stream.toLowerCase()]);
});
