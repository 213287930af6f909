import t from 'tap';
import { parseHostPort } from './address.js';

t.test('host:port, with and without a default port', async (t) => {
  t.same(parseHostPort('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  t.same(parseHostPort('edge.example.com:443'), { host: 'edge.example.com', port: 443 });
  t.same(parseHostPort('[::1]:9'), { host: '::1', port: 9 });
  t.same(parseHostPort(' localhost:1 '), { host: 'localhost', port: 1 }, 'surrounding blanks are trimmed');
  t.same(parseHostPort('edge.example.com', 8080), { host: 'edge.example.com', port: 8080 });
  t.same(parseHostPort('[::1]', 8080), { host: '::1', port: 8080 });
  t.same(parseHostPort('edge:9000', 8080), { host: 'edge', port: 9000 }, 'an explicit port wins over the default');
  for (const bad of ['host:', ':80', 'host:0', 'host:65536', '::1:80', 'a:b:c', '', 'ho st:80', '[]:80', '[::1', 'host:+80', 'host:8e1']) {
    t.throws(() => parseHostPort(bad, 8080), { message: /invalid address/ }, `${JSON.stringify(bad)} refused`);
  }
  t.throws(() => parseHostPort('edge.example.com'), { message: /expected HOST:PORT"?$/ }, 'no default: the port is required');
});
