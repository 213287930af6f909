import t from 'tap';
import { createLogger } from '../../shared/platform/logger.js';
import { KeyedRateLimiter, LogRationer, LoginRationer } from './rate-limit.js';

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

t.test('idle keys whose bucket has refilled are forgotten as new keys arrive', async (t) => {
  let now = 0;
  const rl = new KeyedRateLimiter(60, 2, 100_000, () => now);
  for (let i = 0; i < 1000; i++) rl.take(`old-${i}`);
  t.equal(rl.size, 1000, 'every key that took a token is remembered while it refills');
  now += 5_000; // 1 token per second, burst 2: every old bucket is full again
  for (let i = 0; i < 600; i++) rl.take(`new-${i}`);
  t.equal(rl.size, 600, 'every refilled old key was dropped; only the 600 keys still refilling remain');
  t.equal(rl.take('old-1'), true, 'a forgotten key starts with a full bucket, as it would have had');
  t.equal(rl.take('old-1'), true);
  t.equal(rl.take('old-1'), false, 'and is rationed from there');
});

t.test('LoginRationer: address and client budgets, reserved before the check, refunded on success', async (t) => {
  let now = 0;
  const r = new LoginRationer({ failuresPerMinutePerAddress: 2, failuresPerMinutePerClient: 3, now: () => now });
  // Concurrent attempts reserve at once: the third in flight for one address and id is refused
  // only once both budgets are spent, never after the fact.
  const inFlight = [r.admit('A', 1), r.admit('A', 1), r.admit('A', 1), r.admit('A', 1)];
  t.same(inFlight.map(Boolean), [true, true, true, false], 'two charged to both, the third to the id alone, then refused');
  for (const x of inFlight) x?.failed();
  t.ok(r.admit('A', 2), 'address over budget, another id is not under attack: admitted');

  // Success refunds what was reserved.
  const r2 = new LoginRationer({ failuresPerMinutePerAddress: 1, failuresPerMinutePerClient: 1, now: () => now });
  for (let i = 0; i < 5; i++) r2.admit('B', 7)!.succeeded();
  r2.admit('B', 7)!.abandoned();
  t.ok(r2.admit('B', 7), 'successes and attempts without a verdict never use up a budget');
});

t.test('LoginRationer: an id under attack is refused except from a recent known-good address', async (t) => {
  let now = 0;
  const r = new LoginRationer({ failuresPerMinutePerAddress: 10, failuresPerMinutePerClient: 2, knownAddressTtlMs: 60 * 60_000, now: () => now });
  r.admit('home', 5)!.succeeded();
  r.admit('x1', 5)!.failed();
  r.admit('x2', 5)!.failed();
  t.notOk(r.admit('x3', 5), 'a third address gets no guess: the id is over budget');
  t.notOk(r.admit('new', 5), 'nor does a new address with (perhaps) the right code');
  const home = r.admit('home', 5);
  t.ok(home, 'the address it last logged in from still may try');
  home!.failed();
  t.notOk(r.admit('x3', 5));
  now += 2 * 60 * 60_000; // the known address expired, and the budgets refilled
  t.ok(r.admit('x3', 5), 'budgets refill with time');
  r.admit('x3', 5)!.failed();
  r.admit('x3', 5)?.failed();
  t.notOk(r.admit('home', 5), 'a known address is forgotten after its TTL');
});

/** A logger writing JSON lines into an array. */
function captured(): { log: ReturnType<typeof createLogger>; lines: { msg: string; [k: string]: unknown }[] } {
  const lines: { msg: string }[] = [];
  const log = createLogger({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { msg: string }) });
  return { log, lines };
}

t.test('LogRationer: the first N per reason per interval, then one summary line', async (t) => {
  const { log, lines } = captured();
  const r = new LogRationer(log, { perInterval: 3, intervalMs: 60_000 });
  t.teardown(() => r.stop());
  for (let i = 0; i < 100; i++) r.warn('bad first frame', { i }, 'connection closed: bad first frame');
  r.warn('tunnel refused: bad proof', {}, 'tunnel refused: bad proof');
  t.equal(lines.length, 4, 'three of the first reason, one of the other');
  r.flush();
  t.equal(lines.length, 5, 'one summary line, for the reason that went over only');
  t.match(lines[4], { level: 40, reason: 'bad first frame', suppressed: 97, msg: 'suppressed 97 similar warnings: bad first frame' });
  r.warn('bad first frame', {}, 'connection closed: bad first frame');
  t.equal(lines.length, 6, 'a new interval logs again');
  r.flush();
  t.equal(lines.length, 6, 'nothing suppressed, no summary');
});
