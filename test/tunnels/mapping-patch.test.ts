import t from 'tap';
import { updateMapping } from '../../shared/domain/mapping/mapping.commands.js';
import { liveVisitor, startStreamingService } from './live.js';
import { canConnect, createWorld, eventually, META, startTargetService, visit, visitOutcome } from './world.js';

/**
 * PATCH /mappings/{id} through the domain command, against a real edge and real agents: a new
 * target applies to the next tunnel, disabling closes the public port and resets a running
 * transfer, enabling brings the mapping back, and a request that changes nothing appends nothing.
 */

t.test('a public mapping re-targeted, disabled with a transfer in flight, and enabled again', async (t) => {
  const w = await createWorld(t);
  const user = await w.user();
  const b = await w.client(user);
  w.agent({ ...b });
  const first = await startTargetService(t, 'banner', Buffer.from('first service'));
  const second = await startTargetService(t, 'banner', Buffer.from('second service'));
  const m = await w.mapping({ userId: user, targetClientId: b.clientId, targetPort: first.port });
  const port = m.publicPort!;
  await eventually(() => canConnect(port), 'public port open');
  // The target agent applied the mapping (its side reported active): a visitor gets a tunnel.
  await eventually(async () => {
    const row = await w.tdb.db.selectFrom('mappings').select('status').where('mapping_id', '=', m.mappingId).executeTakeFirst();
    return row?.status === 'active';
  }, 'mapping active');
  t.equal((await visit(port, Buffer.from('hi'))).toString(), 'first service');

  const moved = await updateMapping(w.store, { mappingId: m.mappingId, targetPort: second.port }, META);
  t.equal(moved.changed, true);
  await w.settle(moved.position);
  const answer = await eventually(async () => {
    const got = (await visit(port, Buffer.from('hi')).catch(() => Buffer.alloc(0))).toString();
    return got === 'second service' ? got : undefined;
  }, 'the next tunnel reaches the new target');
  t.equal(answer, 'second service');

  const same = await updateMapping(w.store, { mappingId: m.mappingId, targetPort: second.port, enabled: true }, META);
  t.equal(same.changed, false, 'nothing to change: nothing appended');

  // A transfer in flight through the mapping, then disable: reset, and the port closes.
  const streaming = await startStreamingService(t);
  const toStreaming = await updateMapping(w.store, { mappingId: m.mappingId, targetPort: streaming.port }, META);
  await w.settle(toStreaming.position);
  const live = await eventually(async () => {
    const v = liveVisitor(port);
    const ok = await v.flowing.then(() => true, () => false);
    if (!ok) v.close();
    return ok ? v : undefined;
  }, 'a live transfer to the streaming service');
  const before = Date.now();
  const off = await updateMapping(w.store, { mappingId: m.mappingId, enabled: false }, META);
  const ended = await live.ended;
  t.ok(ended.at - before < 5000, `ended ${ended.at - before} ms after the disable`);
  t.equal(ended.how, 'reset', 'the running transfer is reset when the mapping is disabled');
  await w.settle(off.position);
  await eventually(async () => !(await canConnect(port)), 'the public port closes');
  const row = await w.tdb.db.selectFrom('mappings').select(['status', 'enabled']).where('mapping_id', '=', m.mappingId).executeTakeFirstOrThrow();
  t.same(row, { status: 'disabled', enabled: false });

  const on = await updateMapping(w.store, { mappingId: m.mappingId, enabled: true, targetPort: first.port }, META);
  await w.settle(on.position);
  await eventually(() => canConnect(port), 'the public port opens again');
  const back = await eventually(async () => {
    const r = await visitOutcome(port, Buffer.from('hi'));
    return r.received.toString() === 'first service' ? r : undefined;
  }, 'tunnels work again after enabling');
  t.equal(back.reset, false);

  await t.rejects(updateMapping(w.store, { mappingId: m.mappingId, targetPort: 0 }, META), { code: 'TNX_MAPPING_INVALID' });
  await t.rejects(updateMapping(w.store, { mappingId: 9999, enabled: false }, META), { code: 'TNX_MAPPING_NOT_FOUND' });
});
