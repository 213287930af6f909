import t, { type Test } from 'tap';
import { Client, credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { bridgeService, type BridgeFrame, type OpenAckFrame, type OutFrame } from '../../services/edge/bridge/proto.js';
import { BridgeError, BridgeErrorCode, computeBridgeMac, OpenVerifier, signOpen, type BridgeOpen } from '../../services/edge/bridge/index.js';
import { echoHandler, newPool, openReq, SECRET, startBridge, startEcho } from './helpers.js';

/** Sends one raw first frame on a fresh call and returns the callee's answer. */
async function rawFirst(t: Test, port: number, frame: OutFrame): Promise<OpenAckFrame> {
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  t.teardown(() => client.close());
  const def = bridgeService()['Tunnel']!;
  const call = client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize) as ClientDuplexStream<OutFrame, BridgeFrame>;
  call.on('error', () => undefined);
  call.write(frame);
  const first = await new Promise<BridgeFrame>((resolve, reject) => {
    call.once('data', resolve);
    call.once('end', () => reject(new Error('ended without an answer')));
  });
  call.cancel();
  if (first.kind !== 'open_ack') throw new Error(`expected open_ack, got ${first.kind}`);
  return first.open_ack;
}

async function refusal(p: Promise<unknown>): Promise<BridgeError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof BridgeError) return err;
    throw err;
  }
  throw new Error('open was not refused');
}

t.test('wrong secret, stale and future timestamps, wrong target node: refused with their codes, handler never called', async (t) => {
  const calls: BridgeOpen[] = [];
  const server = await startBridge(t, { handler: echoHandler(await startEcho(t), calls) });
  const address = `127.0.0.1:${server.port}`;

  const wrong = await refusal(newPool(t, { secret: 'another-cluster-secret-xyz' }).open(address, openReq()));
  t.equal(wrong.code, BridgeErrorCode.AuthFailed, 'a wrong cluster secret');
  t.ok(wrong.refusedByPeer, 'refused by the peer, not a transport failure');

  const stale = await refusal(newPool(t, { now: () => Date.now() - 61_000 }).open(address, openReq()));
  t.equal(stale.code, BridgeErrorCode.Stale, 'a timestamp 61 s old');
  const future = await refusal(newPool(t, { now: () => Date.now() + 61_000 }).open(address, openReq()));
  t.equal(future.code, BridgeErrorCode.Stale, 'a timestamp 61 s ahead');

  const other = await refusal(newPool(t).open(address, { ...openReq(), targetNodeId: 'node-c' }));
  t.equal(other.code, BridgeErrorCode.WrongNode, 'a mac made for another node');

  t.equal(calls.length, 0, 'the handler was never called');
  const ok = await newPool(t, { now: () => Date.now() - 59_000 }).open(address, openReq());
  t.equal(calls.length, 1, 'within the window (59 s) the same pool setup is accepted');
  ok.destroy();
});

t.test('a replayed Open is refused, and a changed field breaks the mac', async (t) => {
  const calls: BridgeOpen[] = [];
  const server = await startBridge(t, { handler: echoHandler(await startEcho(t), calls) });
  const open = signOpen(SECRET, 'node-a', openReq('tun-replay'));

  t.same(await rawFirst(t, server.port, { open }), { ok: true, error_code: '', error_message: '' }, 'first use accepted');
  t.equal(calls.length, 1);
  const again = await rawFirst(t, server.port, { open });
  t.equal(again.ok, false);
  t.equal(again.error_code, BridgeErrorCode.Replayed, 'the same Open again is a replay');

  const tampered = { ...signOpen(SECRET, 'node-a', openReq('tun-x')), tunnel_id: 'tun-y' };
  t.equal((await rawFirst(t, server.port, { open: tampered })).error_code, BridgeErrorCode.AuthFailed, 'a field changed after signing');
  const garbage = { ...signOpen(SECRET, 'node-a', openReq()), mac: 'zz' };
  t.equal((await rawFirst(t, server.port, { open: garbage })).error_code, BridgeErrorCode.Protocol, 'a malformed mac');
  t.equal((await rawFirst(t, server.port, { data: { payload: Buffer.from('hi') } })).error_code, BridgeErrorCode.Protocol, 'data before Open');
  t.equal(calls.length, 1, 'the handler saw only the first, authentic Open');
});

t.test('a refusal by the handler carries its TNX_ code to the caller', async (t) => {
  const server = await startBridge(t, {
    handler: () => {
      throw new BridgeError('TNX_TUNNEL_TARGET_OFFLINE', 'target agent is not connected here');
    },
  });
  const err = await refusal(newPool(t).open(`127.0.0.1:${server.port}`, openReq()));
  t.equal(err.code, 'TNX_TUNNEL_TARGET_OFFLINE');
  t.equal(err.message, 'target agent is not connected here');
  t.ok(err.refusedByPeer);
  const generic = await startBridge(t, { handler: async () => Promise.reject(new Error('boom')) });
  t.equal((await refusal(newPool(t).open(`127.0.0.1:${generic.port}`, openReq()))).code, BridgeErrorCode.TargetFailed);
});

t.test('OpenVerifier: the nonce of an unauthenticated Open is not remembered', async (t) => {
  const now = 1_700_000_000_000;
  const v = new OpenVerifier(SECRET, 'node-b', 60_000, () => now);
  const good = signOpen(SECRET, 'node-a', openReq(), now);
  const forged = { ...good, mac: computeBridgeMac('not-the-secret-at-all', good) };
  t.match(v.verify(forged), { ok: false, code: BridgeErrorCode.AuthFailed });
  t.match(v.verify(good), { ok: true }, 'a forged copy did not burn the real nonce');
  t.match(v.verify(good), { ok: false, code: BridgeErrorCode.Replayed });
  t.throws(() => new OpenVerifier('short', 'node-b'), /at least 16/);
});
