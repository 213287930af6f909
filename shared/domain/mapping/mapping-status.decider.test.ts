import t from 'tap';
import { MAX_AGENT_ERROR_CHARS, MappingAgentStatusReported } from '../../contracts/events.js';
import { given } from '../decider.testkit.js';
import { cleanAgentText, mappingStatusDecider } from './mapping-status.decider.js';

const base = { mapping_id: 1001, client_id: 600000001, role: 'source' as const, config_version: 42, node_id: 'node-001', session_id: 's1' };
const record = (data: Record<string, unknown>) => ({ type: 'RecordMappingAgentStatus' as const, data: { ...base, ...data } as never });

t.test('a report is always recorded, whatever came before', async (t) => {
  const active = { type: 'MappingAgentStatusReported' as const, data: { ...base, status: 'active' as const } };
  t.same(given(mappingStatusDecider, 'mapping-status.1001', []).when(record({ status: 'active' })), [active]);
  t.same(given(mappingStatusDecider, 'mapping-status.1001', [active]).when(record({ status: 'active' })), [active]);
});

t.test('an active report drops any reason; an error report always has one', async (t) => {
  t.same(given(mappingStatusDecider, 'x.1', []).when(record({ status: 'active', error: 'stale' }))[0]?.data, { ...base, status: 'active' });
  t.match(given(mappingStatusDecider, 'x.1', []).when(record({ status: 'error' }))[0]?.data, { status: 'error', error: /without a reason/ });
  t.match(given(mappingStatusDecider, 'x.1', []).when(record({ status: 'error', error: '\u0000\u0001' }))[0]?.data, { error: /without a reason/ });
});

t.test('agent text loses NUL, control characters and lone surrogates, keeps real characters', async (t) => {
  t.equal(cleanAgentText('listen a\u0000b: ENOTFOUND'), 'listen ab: ENOTFOUND');
  t.equal(cleanAgentText('bad \ud800 high, bad \udc00 low'), 'bad \ufffd high, bad \ufffd low');
  t.equal(cleanAgentText('port 😀 ok\r\nnext\tline\u001b[31m'), 'port 😀 ok  next line[31m');
  t.equal(cleanAgentText('  padded  '), 'padded');
});

t.test('agent text is cut to the limit without splitting a surrogate pair, and the event schema accepts it', async (t) => {
  const long = cleanAgentText('x'.repeat(10_000));
  t.equal(long.length, MAX_AGENT_ERROR_CHARS);
  t.ok(long.endsWith('…'));
  for (let pad = 0; pad < 4; pad++) {
    const cut = cleanAgentText('y'.repeat(pad) + '😀'.repeat(400));
    t.ok(cut.length <= MAX_AGENT_ERROR_CHARS, `pad ${pad}: within the limit`);
    t.notOk(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(cut), `pad ${pad}: no lone surrogate`);
  }
  const data = given(mappingStatusDecider, 'x.1', []).when(record({ status: 'error', error: '\u0000'.repeat(5) + 'é'.repeat(5000) + '\ud800' }))[0]?.data;
  t.ok(MappingAgentStatusReported.safeParse(data).success, 'a cleaned report always fits the schema');
});
