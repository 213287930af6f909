import t from 'tap';
import { Lifecycle } from './lifecycle.js';
import { silentLogger } from './logger.js';

t.test('closes in reverse order, survives a failing closer, and closes once', async (t) => {
  const order: string[] = [];
  const lc = new Lifecycle(silentLogger());
  lc.add('database', () => void order.push('database'));
  lc.add('broken', () => {
    order.push('broken');
    throw new Error('boom');
  });
  lc.add('listener', async () => {
    await new Promise((r) => setTimeout(r, 5));
    order.push('listener');
  });
  t.equal(lc.isClosing, false);
  await Promise.all([lc.close(), lc.close()]);
  await lc.close();
  t.same(order, ['listener', 'broken', 'database'], 'reverse order, each exactly once, the failure did not stop the rest');
  t.equal(lc.isClosing, true);
});
