import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TunnoxMetrics } from '../../services/cli/metrics.js';
import { ROOT } from '../e2e/harness.js';

// infra/grafana/tunnox.json: valid dashboard JSON whose every query names series the code
// registers, and a panel for every tunnox_ family the code registers.

interface Target {
  refId: string;
  expr: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

/** PromQL functions, aggregations and keywords (what may stand where a metric name could). */
const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset']);

/** The metric names a PromQL expression selects. */
function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // label values
    .replace(/\{[^}]*\}/g, ' ') // matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // grouping labels
  const names: string[] = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    if (m[1]) continue; // a function or an aggregation
    if (!PROMQL_WORDS.has(m[0])) names.push(m[0]);
  }
  return names;
}

/** Every series name a scrape of `tunnox server` can show: histograms as _bucket/_sum/_count. */
async function registeredSeries(): Promise<{ series: Set<string>; tunnoxFamilies: string[] }> {
  const metrics = new TunnoxMetrics('server');
  const series = new Set<string>();
  const tunnoxFamilies: string[] = [];
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    const type = String(m.type);
    if (m.name.startsWith('tunnox_')) tunnoxFamilies.push(m.name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) series.add(m.name + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) series.add(m.name + s);
    else series.add(m.name);
  }
  return { series, tunnoxFamilies };
}

t.test('metricsIn reads PromQL as the dashboard writes it', async (t) => {
  t.same(metricsIn('sum by (kind) (rate(tunnox_edge_tunnels_opened_total{job=~"$job",kind!="bridge"}[$__rate_interval]))'), ['tunnox_edge_tunnels_opened_total']);
  t.same(metricsIn('histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{x="y"}[5m]))) / b'), ['a_bucket', 'b']);
  t.same(metricsIn('count by (version, role) (tunnox_build_info)'), ['tunnox_build_info']);
});

t.test('infra/grafana/tunnox.json', async (t) => {
  const dash = JSON.parse(await readFile(join(ROOT, 'infra', 'grafana', 'tunnox.json'), 'utf8')) as {
    title: string;
    uid: string;
    schemaVersion: number;
    panels: Panel[];
    templating: { list: { name: string; type: string }[] };
  };
  t.ok(dash.title && dash.uid && dash.schemaVersion >= 30, 'title, uid and a current schema version');
  const vars = new Map(dash.templating.list.map((v) => [v.name, v.type]));
  t.equal(vars.get('datasource'), 'datasource', 'the Prometheus data source is chosen on import');
  t.equal(vars.get('job'), 'query', 'a job variable');

  const ids = dash.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const bad = dash.panels.filter((p) => p.gridPos.x < 0 || p.gridPos.w < 1 || p.gridPos.x + p.gridPos.w > 24 || p.gridPos.h < 1);
  t.same(bad.map((p) => p.title), [], 'every panel fits the 24-column grid');

  const { series, tunnoxFamilies } = await registeredSeries();
  const used = new Set<string>();
  const unknown: string[] = [];
  const queries = dash.panels.filter((p) => p.type !== 'row');
  for (const p of queries) {
    t.ok(p.targets && p.targets.length > 0, `${p.title}: has queries`);
    t.equal(p.datasource?.uid, '${datasource}', `${p.title}: uses the chosen data source`);
    t.equal(new Set(p.targets?.map((x) => x.refId)).size, p.targets?.length, `${p.title}: refIds unique`);
    for (const target of p.targets ?? []) {
      const names = metricsIn(target.expr);
      t.ok(names.length > 0, `${p.title}: "${target.expr}" selects a metric`);
      for (const n of names) {
        if (series.has(n)) used.add(n);
        else unknown.push(`${p.title}: ${n}`);
      }
    }
  }
  t.same(unknown, [], 'every query names a series the code registers');
  const familyUsed = (f: string) => [...used].some((u) => u === f || u === `${f}_bucket` || u === `${f}_count` || u === `${f}_sum`);
  t.same(tunnoxFamilies.filter((f) => !familyUsed(f)), [], 'every tunnox_ metric the code registers has a panel');
});
