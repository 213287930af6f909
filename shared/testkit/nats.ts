import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { uniqueName } from './pg.js';

export const TEST_NATS_URL = process.env.TUNNOX_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

export interface TestNats {
  nc: NatsConnection;
  /** Unique JetStream stream name for this test, e.g. TNX_TEST_lx3k_ab12cd34. */
  streamName: string;
  /** Unique subject prefix for this test (use instead of `tunnox`). */
  subjectPrefix: string;
  /** Deletes every stream and KV bucket whose name starts with streamName, then closes. */
  cleanup(): Promise<void>;
}

export async function createTestNats(): Promise<TestNats> {
  const nc = await connect({ servers: TEST_NATS_URL });
  const base = uniqueName('TNX_TEST').toUpperCase();
  return {
    nc,
    streamName: base,
    subjectPrefix: base.toLowerCase(),
    async cleanup() {
      try {
        const jsm = await jetstreamManager(nc);
        for await (const s of jsm.streams.list()) {
          const n = s.config.name;
          // KV buckets are named after the lower-case subject prefix (KV_<prefix>_nodes, also a
          // test's own <prefix>-copy): match both cases so none outlives the test.
          if (n.startsWith(base) || n.startsWith(`KV_${base}`) || n.startsWith(`KV_${base.toLowerCase()}`)) await jsm.streams.delete(n);
        }
      } finally {
        await nc.close();
      }
    },
  };
}
