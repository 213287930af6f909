import t from 'tap';
import { MAX_SERVERS, parseServerList, sameCluster } from './servers.js';

t.test('server lists: one address, comma-separated, arrays; default port; duplicates dropped', async (t) => {
  t.same(parseServerList('edge1'), { text: 'edge1', edges: [{ scheme: 'tls', host: 'edge1', port: 8080, path: '', address: 'edge1:8080', text: 'edge1:8080' }] });
  t.same(
    parseServerList(' a:1 , b ,[::1]:3').edges.map((e) => e.address),
    ['a:1', 'b:8080', '[::1]:3'],
    'entries trimmed, port 8080 when omitted, IPv6 kept bracketed',
  );
  t.equal(parseServerList(' a:1 , b ').text, 'a:1,b', 'the text is the list as given, trimmed');
  t.same(parseServerList(['a:1', 'b:2,c:3']).edges.map((e) => e.address), ['a:1', 'b:2', 'c:3'], 'an array, whose entries may be lists too');
  t.same(parseServerList('a,a:8080,b').edges.map((e) => e.address), ['a:8080', 'b:8080'], 'the same edge twice is tried once');
});

t.test('server lists: malformed input is refused with the value in the message', async (t) => {
  for (const bad of ['', 'a,,b', 'a,', ',a', 'a:0', 'a:65536', 'a:1:2', '::1', 'a b']) {
    t.throws(() => parseServerList(bad), { message: /invalid/ }, JSON.stringify(bad));
  }
  t.throws(() => parseServerList([]), { message: /invalid server list/ }, 'an empty array');
  for (const bad of ['http://a:1', 'tcp://a:1/x', 'a:1/x', 'wss://a:1/ x']) t.throws(() => parseServerList(bad), { message: /invalid server/ }, JSON.stringify(bad));
  t.throws(() => parseServerList(Array.from({ length: MAX_SERVERS + 1 }, (_, i) => `e${i}`).join(',')), { message: /too many servers/ });
});

t.test('server lists: schemes choose the transport; HOST:PORT is TLS; ws(s) take a path', async (t) => {
  const edges = parseServerList('a:1,tls://b:2,tcp://c:3,ws://d:4,wss://e/custom,wss://[::1]:5').edges;
  t.same(edges.map((e) => [e.scheme, e.address, e.path, e.text]), [
    ['tls', 'a:1', '', 'a:1'],
    ['tls', 'b:2', '', 'b:2'],
    ['tcp', 'c:3', '', 'tcp://c:3'],
    ['ws', 'd:4', '/tunnox', 'ws://d:4/tunnox'],
    ['wss', 'e:443', '/custom', 'wss://e:443/custom'],
    ['wss', '[::1]:5', '/tunnox', 'wss://[::1]:5/tunnox'],
  ]);
  t.same(parseServerList('tcp://a:1,a:1').edges.length, 2, 'the same address over two transports is two entries');
  t.ok(sameCluster('a:1', parseServerList('tcp://a:1')), 'credentials follow the edge address whatever the transport');
});

t.test('saved credentials match a list that shares an edge with the one they were saved for', async (t) => {
  const given = parseServerList('a:8080,b:8080');
  t.ok(sameCluster('a:8080', given), 'an old file (one address) in the list');
  t.ok(sameCluster('b', given), 'same edge, port implied');
  t.ok(sameCluster('b:8080,c:8080', given), 'overlapping lists');
  t.ok(sameCluster('a:8080,b:8080', given));
  t.notOk(sameCluster('c:8080', given), 'no edge in common');
  t.notOk(sameCluster('a:9090', given), 'another port is another edge');
  t.notOk(sameCluster('not an address', given), 'an unparsable saved value never matches');
});
