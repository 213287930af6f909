import t from 'tap';
import type { ClientState, EntityUpdate, MappingState } from './view.js';
import { MemoryEdgeView, type ViewChange } from './view.js';

const client = (id: number, config_version: number, extra: Partial<ClientState> = {}): ClientState => ({
  client_id: id,
  client_type: 'managed',
  auth_code_hash: `hash-${id}`,
  config_version,
  enabled: true,
  epoch: 0,
  ...extra,
});

const mapping = (id: number, extra: Partial<MappingState> = {}): MappingState => ({
  mapping_id: id,
  protocol: 'tcp',
  source_client_id: 1,
  target_client_id: 2,
  target_host: '127.0.0.1',
  target_port: 3306,
  local_host: '127.0.0.1',
  local_port: 13306,
  public_port: null,
  secret_generation: id === 11 ? 3 : 1,
  enabled: true,
  ...extra,
});

const c = (id: number, version: number, state: ClientState | null): EntityUpdate => ({ kind: 'client', id, version, state });
const m = (id: number, version: number, state: MappingState | null): EntityUpdate => ({ kind: 'mapping', id, version, state });

t.test('applies clients and mappings and derives each client side of its config', async (t) => {
  const view = new MemoryEdgeView();
  t.equal(view.apply([m(10, 5, mapping(10)), m(11, 6, mapping(11, { source_client_id: null, local_port: null, public_port: 8080 })), c(1, 6, client(1, 5)), c(2, 6, client(2, 6))]), 4);
  t.same(view.client(1), client(1, 5));
  t.same(view.mapping(10), mapping(10));
  t.same(view.publicMappings().map((x) => x.mapping_id), [11]);
  t.same(view.clientConfig(1), {
    version: 5,
    mappings: [{ mapping_id: 10, protocol: 'tcp', role: 'source', local_host: '127.0.0.1', local_port: 13306, secret_generation: 1 }],
  });
  t.same(view.clientConfig(2), {
    version: 6,
    mappings: [
      { mapping_id: 10, protocol: 'tcp', role: 'target', target_host: '127.0.0.1', target_port: 3306, secret_generation: 1 },
      { mapping_id: 11, protocol: 'tcp', role: 'target', target_host: '127.0.0.1', target_port: 3306, secret_generation: 3 },
    ],
  });
  t.same(view.clientConfig(99), { version: 0, mappings: [] }, 'an unknown client has an empty config');
  t.same(view.size(), { clients: 2, mappings: 2 });
});

t.test('older or equal versions are ignored: duplicates and reordering are harmless', async (t) => {
  const view = new MemoryEdgeView();
  view.apply([c(1, 10, client(1, 10))]);
  t.equal(view.apply([c(1, 10, client(1, 10, { auth_code_hash: 'dup' }))]), 0, 'same version: ignored');
  t.equal(view.apply([c(1, 7, client(1, 7, { auth_code_hash: 'old' }))]), 0, 'older version: ignored');
  t.equal(view.client(1)?.auth_code_hash, 'hash-1');
  t.equal(view.apply([c(1, 11, client(1, 11, { auth_code_hash: 'new' }))]), 1);
  t.equal(view.client(1)?.auth_code_hash, 'new');
  t.equal(view.versionOf('client', 1), 11);
});

t.test('a tombstone drops the entity and keeps its version, so a stale state cannot resurrect it', async (t) => {
  const view = new MemoryEdgeView();
  view.apply([m(10, 5, mapping(10, { public_port: 8080 })), c(1, 5, client(1, 5)), c(2, 5, client(2, 5))]);
  view.apply([m(10, 9, null)]);
  t.equal(view.mapping(10), undefined);
  t.same(view.publicMappings(), []);
  t.same(view.clientConfig(1).mappings, [], 'gone from the source config');
  t.same(view.clientConfig(2).mappings, [], 'gone from the target config');
  t.equal(view.apply([m(10, 8, mapping(10))]), 0, 'a late older state is ignored');
  t.equal(view.mapping(10), undefined);
  t.same(view.size(), { clients: 2, mappings: 0 });
  view.apply([c(2, 12, null)]);
  t.equal(view.client(2), undefined, 'client tombstone');
  t.equal(view.apply([c(2, 11, client(2, 11))]), 0);
});

t.test('disabled mappings stay known (TunnelOpen refuses them) but leave configs and public listeners', async (t) => {
  const view = new MemoryEdgeView();
  view.apply([m(10, 5, mapping(10, { enabled: false, public_port: 8080 })), c(1, 5, client(1, 5))]);
  t.equal(view.mapping(10)?.enabled, false);
  t.same(view.clientConfig(1).mappings, []);
  t.same(view.publicMappings(), []);
});

t.test('listeners hear one change per applied batch, naming the clients and mappings involved', async (t) => {
  const view = new MemoryEdgeView();
  const changes: ViewChange[] = [];
  const off = view.subscribe((ch) => changes.push(ch));
  view.apply([m(10, 5, mapping(10)), c(1, 5, client(1, 5))]);
  view.apply([m(10, 5, mapping(10))]); // stale: no change
  // The mapping moves to another target: both the old and the new target are affected.
  view.apply([m(10, 6, mapping(10, { target_client_id: 3 }))]);
  off();
  view.apply([m(10, 7, null)]);
  t.equal(changes.length, 2);
  t.same([...changes[0]!.clients].sort(), [1, 2]);
  t.same(changes[0]!.mappings.get(10), { before: undefined, after: mapping(10) });
  t.same([...changes[1]!.clients].sort(), [1, 2, 3]);
  t.equal(changes[1]!.mappings.get(10)?.before?.target_client_id, 2);
  t.equal(changes[1]!.mappings.get(10)?.after?.target_client_id, 3);
  t.same(view.clientConfig(2).mappings, [], 'the old target no longer has it');
});

t.test('an update whose state names another entity is refused', async (t) => {
  const view = new MemoryEdgeView();
  t.throws(() => view.apply([c(1, 5, client(2, 5))]), /carries the state of client 2/);
  t.throws(() => view.apply([m(1, 5, mapping(2))]), /carries the state of mapping 2/);
});

t.test('ready once marked; waitForClient resolves on arrival or after its timeout', async (t) => {
  const view = new MemoryEdgeView();
  t.equal(view.ready, false);
  const ready = view.whenReady();
  view.markReady();
  await ready;
  t.equal(view.ready, true);
  const waiting = view.waitForClient(5, 5_000);
  setImmediate(() => view.apply([c(5, 3, client(5, 3))]));
  t.same(await waiting, client(5, 3), 'woken by the update');
  t.equal(await view.waitForClient(6, 30), undefined, 'unknown after the timeout');
});
