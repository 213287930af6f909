import t from 'tap';
import { KeyedRateLimiter } from './rate-limit.js';

t.test('allows a burst, refuses past it, refills with time, per key', async (t) => {
  let now = 0;
  const rl = new KeyedRateLimiter(6, 3, 100, () => now);
  t.same([rl.take('a'), rl.take('a'), rl.take('a'), rl.take('a')], [true, true, true, false], 'burst of 3');
  t.equal(rl.take('b'), true, 'other keys are independent');
  now += 10_000; // 6/min = one token per 10 s
  t.equal(rl.take('a'), true, 'one token back after 10 s');
  t.equal(rl.take('a'), false);
  now += 10 * 60_000;
  t.same([rl.take('a'), rl.take('a'), rl.take('a'), rl.take('a')], [true, true, true, false], 'refill never exceeds the burst');
});

t.test('a zero rate refuses everything; the key map is capped', async (t) => {
  t.equal(new KeyedRateLimiter(0).take('a'), false);
  const rl = new KeyedRateLimiter(1, 1, 2, () => 0);
  t.ok(rl.take('a') && rl.take('b') && rl.take('c'));
  t.equal(rl.take('c'), false, 'c is remembered');
  t.equal(rl.take('a'), true, 'a was evicted (oldest) and starts with a full bucket');
});
