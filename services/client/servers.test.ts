import t from 'tap';
import { MAX_SERVERS, parseServerList, sameCluster } from './servers.js';

t.test('server lists: one address, comma-separated, arrays; default port; duplicates dropped', async (t) => {
  t.same(parseServerList('edge1'), { text: 'edge1', edges: [{ host: 'edge1', port: 8080, address: 'edge1:8080' }] });
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
  t.throws(() => parseServerList(Array.from({ length: MAX_SERVERS + 1 }, (_, i) => `e${i}`).join(',')), { message: /too many servers/ });
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
