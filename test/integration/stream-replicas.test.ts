import t from 'tap';
import { jetstreamManager } from '@nats-io/jetstream';
import { ensureStateStream } from '../../shared/bus/state.js';
import { openNodeBucket } from '../../shared/cluster/node-registry.js';
import { openRouteBucket } from '../../shared/cluster/routes.js';
import { openJetStreamEventStore } from '../../shared/eventstore/jetstream.js';
import { createLogger } from '../../shared/platform/logger.js';
import { createTestNats } from '../../shared/testkit/nats.js';
import { spawnTunnox } from '../e2e/harness.js';
import { TEST_NATS_URL } from '../../shared/testkit/nats.js';
import { createTestDatabase } from '../../shared/testkit/pg.js';

// --stream-replicas reaches every stream and bucket tunnox creates. The test NATS is one server, so
// it refuses more than one replica: a refusal is the proof that the number got there (a 3-server
// cluster is what infra/terraform deploys; none runs here).

t.test('each creator passes its replicas to JetStream', async (t) => {
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const jsm = await jetstreamManager(tn.nc);
  const refused = /replicas|not supported|insufficient/i;

  await t.rejects(openJetStreamEventStore({ nc: tn.nc, streamName: `${tn.streamName}_EV3`, subjectPrefix: `${tn.subjectPrefix}a`, replicas: 3 }), { message: refused }, 'event stream: 3 replicas asked for');
  await t.rejects(ensureStateStream(jsm, `${tn.streamName}_ST3`, `${tn.subjectPrefix}b`, undefined, 3), { message: refused }, 'state stream');
  await t.rejects(openNodeBucket(tn.nc, `${tn.streamName}_nodes3`, 5_000, 3), { message: refused }, 'node bucket');
  await t.rejects(openRouteBucket(tn.nc, `${tn.streamName}_routes3`, 5_000, 3), { message: refused }, 'route bucket');

  const store = await openJetStreamEventStore({ nc: tn.nc, streamName: `${tn.streamName}_EV1`, subjectPrefix: `${tn.subjectPrefix}c`, replicas: 1 });
  t.teardown(() => store.close());
  t.equal((await jsm.streams.info(`${tn.streamName}_EV1`)).config.num_replicas, 1, 'one replica when asked for one');

  // An existing stream keeps its replicas; the process says so instead of failing.
  const lines: string[] = [];
  const logger = createLogger({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const again = await openJetStreamEventStore({ nc: tn.nc, streamName: `${tn.streamName}_EV1`, subjectPrefix: `${tn.subjectPrefix}c`, replicas: 3, logger });
  t.teardown(() => again.close());
  t.equal((await jsm.streams.info(`${tn.streamName}_EV1`)).config.num_replicas, 1, 'the existing stream is left as it is');
  t.ok(lines.some((l) => l.includes('fewer replicas than --stream-replicas') && l.includes('"wanted":3')), 'with a warning naming the wanted replicas');
});

t.test('tunnox projector --stream-replicas 3 against one NATS server: a clear refusal at start', async (t) => {
  const database = await createTestDatabase('tnx_replicas', false);
  t.teardown(() => database.drop());
  const tn = await createTestNats();
  t.teardown(() => tn.cleanup());
  const p = spawnTunnox(['projector', '--nats', TEST_NATS_URL, '--stream', tn.streamName, '--subject-prefix', tn.subjectPrefix, '--database', database.url, '--stream-replicas', '3']);
  t.equal(await p.exited, 1, 'exits 1');
  t.ok(p.lines.some((l) => l.startsWith('tunnox: ') && /replicas/i.test(l)), `says why: ${p.lines.find((l) => l.startsWith('tunnox: '))}`);
  const bad = spawnTunnox(['edge', '--nats', TEST_NATS_URL, '--stream-replicas', '9']);
  t.equal(await bad.exited, 1, 'an out-of-range count is refused');
  t.ok(bad.lines.some((l) => l.includes('--stream-replicas must be an integer from 1 to 5')), 'naming the flag');
});
