import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, TUNNOX_BIN } from '../e2e/harness.js';
import { Evaluator, loadModule, type Value } from './hcl.js';

// Terraform cannot be installed where the suite runs: infra/terraform is parsed (@cdktf/hcl2json)
// and its values evaluated with test variables (test/infra/hcl.ts), then checked against the code:
// the flags each container gets exist in `tunnox <role> --help`, probes hit endpoints the roles
// serve, selectors match the pods' labels, and the pieces point at each other.

const run = promisify(execFile);
const DIR = join(ROOT, 'infra', 'terraform');
const VARS: Record<string, Value> = {
  image: 'registry.example.com/tunnox:1.2.3',
  edge_domain: 'edge.example.com',
  api_domain: 'api.example.com',
  cluster_secret: 'test-cluster-secret-0123456789',
  api_key: 'tnxk_test-api-key-0123456789',
  edge_tls_secret: 'edge-tls',
};

type Obj = Record<string, any>;
const m = await loadModule(DIR);
const ev = (vars: Record<string, Value> = {}) => new Evaluator(m, { ...VARS, ...vars });
const raw = (type: string, name: string): Obj => {
  const r = m.resources[type]?.[name];
  if (!r) throw new Error(`no ${type}.${name}`);
  return r;
};
/** A resource's attribute path, evaluated: the first block of each nested block type. */
const attr = (e: Evaluator, type: string, name: string, ...path: (string | number)[]): Value =>
  e.expression(`${type}.${name}${path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('')}`);

/** The flags `tunnox <role> --help` lists. */
async function helpFlags(role: string): Promise<Set<string>> {
  const { stdout } = await run(process.execPath, [TUNNOX_BIN, role, '--help']);
  return new Set([...stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((x) => x[1]!));
}

/** `--flag value` pairs of an argument list (flags without a value map to true). */
function flags(args: string[], boolean: Set<string>): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) throw new Error(`stray argument ${a}`);
    if (boolean.has(a)) out.set(a, true);
    else out.set(a, args[++i]!);
  }
  return out;
}
const BOOLEAN = new Set(['--no-anonymous']);

interface Role {
  role: 'api' | 'projector' | 'edge';
  /** The Deployment's spec, evaluated. */
  deployment: Obj;
  pod: Obj;
  container: Obj;
  args: string[];
  flags: Map<string, string | true>;
}
function role(e: Evaluator, name: 'api' | 'projector' | 'edge'): Role {
  const spec = attr(e, 'kubernetes_deployment_v1', name, 'spec', 0) as Obj;
  const pod = spec.template[0] as Obj;
  const container = (pod.spec[0].container as Obj[])[0]!;
  const args = container.args as string[];
  return { role: name, deployment: spec, pod, container, args, flags: flags(args, BOOLEAN) };
}

t.test('hcl.ts evaluates what the module uses', async (t) => {
  const e = ev();
  t.equal(e.expression('var.name'), 'tunnox', 'a default');
  t.equal(e.expression('"${var.name}-nats"'), 'tunnox-nats', 'a template');
  t.same(e.expression('concat(["a"], [1 + 2], var.allow_anonymous ? [] : ["--no-anonymous"])'), ['a', 3, '--no-anonymous'], 'calls, arithmetic, a conditional');
  t.same(e.expression('merge({ a = 1 }, { "b.c" = var.image == null ? 0 : 2 })'), { a: 1, 'b.c': 2 }, 'objects, quoted keys, comparison with null');
  t.same(e.expression('range(3, 6)'), [3, 4, 5], 'range');
  t.throws(() => e.expression('jsonencode(1)'), /not evaluated/, 'an unknown function is said, not guessed');
});

t.test('variables: the required ones, secrets marked sensitive and checked', async (t) => {
  const vars = m.json.variable as Record<string, Obj>;
  const required = Object.keys(vars).filter((v) => !('default' in vars[v]!)).sort();
  t.same(required, ['api_domain', 'api_key', 'cluster_secret', 'edge_domain', 'edge_tls_secret', 'image'], 'image, domains, secrets and the edge certificate must be given');
  for (const s of ['cluster_secret', 'api_key']) {
    t.equal(vars[s]!.sensitive, true, `${s} is sensitive`);
    t.match(JSON.stringify(vars[s]!.validation), /length\(var\.\w+\) >= 16/, `${s} is checked for the 16 characters tunnox requires`);
  }
  for (const v of ['api_replicas', 'projector_replicas', 'edge_min_replicas', 'edge_max_replicas', 'postgres_instances', 'stream_replicas']) t.ok(v in vars, `variable ${v}`);
  const providers = (m.json.terraform as Obj[])[0]!.required_providers[0] as Obj;
  t.same(Object.keys(providers).sort(), ['helm', 'kubernetes'], 'providers: kubernetes and helm');
});

t.test('NATS: the official chart, 3 servers, JetStream on files with sync_interval always', async (t) => {
  const e = ev();
  const nats = e.value(raw('helm_release', 'nats'), {}) as Obj;
  t.equal(nats.repository, 'https://nats-io.github.io/k8s/helm/charts/', 'the nats-io chart repository');
  t.equal(nats.chart, 'nats');
  t.match(nats.version, /^\d+\.\d+\.\d+$/, 'a pinned chart version');
  const values = (nats.values as Obj[])[0]!;
  t.same(values.config.cluster, { enabled: true, replicas: 3 }, 'a 3-server cluster');
  t.equal(values.config.jetstream.enabled, true, 'JetStream');
  t.equal(values.config.jetstream.fileStore.enabled, true, 'file storage');
  t.same(values.config.jetstream.fileStore.pvc, { enabled: true, size: '20Gi' }, 'on a PVC per server');
  t.equal(values.config.jetstream.memoryStore.enabled, false, 'no memory store');
  t.equal(values.config.jetstream.merge.sync_interval, 'always', 'sync_interval: always (fsync before every acknowledgement)');
  t.same((ev({ storage_class: 'fast' }).value(raw('helm_release', 'nats'), {}) as Obj).values[0].config.jetstream.fileStore.pvc.storageClassName, 'fast', 'storage_class reaches the PVC');
  t.match(values.container.image.tag, /^2\.(1[0-9])\./, 'a nats-server with sync_interval (2.10+)');
  t.equal(nats.namespace, 'tunnox', 'in the namespace of the workloads');
});

t.test('PostgreSQL: CloudNativePG operator and Cluster; the roles read its app secret', async (t) => {
  const e = ev();
  const op = e.value(raw('helm_release', 'cloudnative_pg'), {}) as Obj;
  t.equal(op.repository, 'https://cloudnative-pg.github.io/charts');
  t.equal(op.chart, 'cloudnative-pg');
  const pg = (e.value(raw('kubernetes_manifest', 'postgres'), {}) as Obj).manifest as Obj;
  t.equal(pg.apiVersion, 'postgresql.cnpg.io/v1');
  t.equal(pg.kind, 'Cluster');
  t.equal(pg.spec.instances, 3, '3 instances');
  t.same(pg.spec.bootstrap.initdb, { database: 'tunnox', owner: 'tunnox' }, 'database and owner tunnox');
  t.notOk('backup' in pg.spec, 'no backup section unless asked for');
  const secret = e.expression('local.database_secret');
  t.equal(secret, `${pg.metadata.name}-app`, 'the secret CloudNativePG writes for the app user');
  for (const r of ['api', 'projector'] as const) {
    const env = (role(e, r).container.env as Obj[]).find((x) => x.name === 'TUNNOX_DATABASE_URL');
    t.same(env?.value_from[0].secret_key_ref[0], { name: secret, key: 'uri' }, `${r}: TUNNOX_DATABASE_URL from its uri`);
    t.notOk(role(e, r).flags.has('--database'), `${r}: no database URL in the arguments`);
  }
  const edgeEnv = (role(e, 'edge').container.env as Obj[]).map((x) => x.name);
  t.notOk(edgeEnv.includes('TUNNOX_DATABASE_URL'), 'edges get no database');

  const withBackup = ev({ postgres_backup: { destination_path: 's3://bucket/tunnox', secret_name: 'backup-creds', endpoint_url: null, retention: '30d', schedule: '0 0 3 * * *' } });
  const spec = ((withBackup.value(raw('kubernetes_manifest', 'postgres'), {}) as Obj).manifest as Obj).spec;
  t.equal(spec.backup.barmanObjectStore.destinationPath, 's3://bucket/tunnox', 'backup: WAL archive and base backups to object storage');
  t.equal(spec.backup.barmanObjectStore.s3Credentials.accessKeyId.name, 'backup-creds');
  t.equal(withBackup.value(raw('kubernetes_manifest', 'postgres_backup_schedule').count, {}), 1, 'and a scheduled base backup');
  t.equal(ev().value(raw('kubernetes_manifest', 'postgres_backup_schedule').count, {}), 0, 'none without');
  const sched = withBackup.expression('kubernetes_manifest.postgres_backup_schedule.manifest') as Obj;
  t.equal(sched.spec.cluster.name, pg.metadata.name, 'the schedule names the Cluster');
});

t.test('every role: the image, real flags, the cluster it shares, non-root', async (t) => {
  const e = ev();
  const dockerUser = /^USER\s+(\d+)/m.exec(await readFile(join(ROOT, 'Dockerfile'), 'utf8'))![1]!;
  const natsRelease = e.value(raw('helm_release', 'nats'), {}) as Obj;
  const expectedNats = `nats://${natsRelease.name}.${natsRelease.namespace}.svc.cluster.local:4222`;
  const namespace = attr(e, 'kubernetes_namespace_v1', 'tunnox', 'metadata', 0, 'name');
  const shared = new Map<string, string | true>();
  for (const name of ['api', 'projector', 'edge'] as const) {
    const r = role(e, name);
    t.equal(r.container.image, VARS.image, `${name}: image is var.image`);
    t.equal(r.args[0], name, `${name}: runs tunnox ${name}`);
    const known = await helpFlags(name);
    t.same([...r.flags.keys()].filter((f) => !known.has(f)), [], `${name}: every flag is one \`tunnox ${name} --help\` lists`);
    t.equal(r.flags.get('--nats'), expectedNats, `${name}: --nats is the NATS release's client Service`);
    for (const f of ['--nats', '--stream', '--subject-prefix', '--stream-replicas']) {
      if (!shared.has(f)) shared.set(f, r.flags.get(f)!);
      t.equal(r.flags.get(f), shared.get(f), `${name}: the same ${f} as every role`);
    }
    t.equal(r.flags.get('--stream-replicas'), '3', `${name}: 3 JetStream replicas, as many as NATS servers`);
    t.equal(r.flags.get('--metrics-host'), '0.0.0.0', `${name}: metrics on the pod address`);
    const metricsPort = Number(r.flags.get('--metrics-port'));
    t.equal(Number(r.pod.metadata[0].annotations['prometheus.io/port']), metricsPort, `${name}: the scrape annotation names the metrics port`);
    t.ok((r.container.port as Obj[]).some((p) => p.name === 'metrics' && p.container_port === metricsPort), `${name}: and the container declares it`);

    const labels = r.pod.metadata[0].labels as Obj;
    const selector = r.deployment.selector[0].match_labels as Obj;
    t.ok(Object.entries(selector).every(([k, v]) => labels[k] === v), `${name}: the Deployment selects its pods`);
    t.equal(selector['app.kubernetes.io/component'], name, `${name}: by its component`);
    t.equal(attr(e, 'kubernetes_deployment_v1', name, 'metadata', 0, 'namespace'), namespace, `${name}: in the namespace`);

    const podSec = r.pod.spec[0].security_context[0];
    t.equal(podSec.run_as_non_root, true, `${name}: runAsNonRoot`);
    t.equal(String(podSec.run_as_user), dockerUser, `${name}: the image's own uid (${dockerUser})`);
    const sec = r.container.security_context[0];
    t.ok(sec.allow_privilege_escalation === false && sec.read_only_root_filesystem === true && sec.capabilities[0].drop.includes('ALL'), `${name}: no escalation, read-only root, no capabilities`);
  }
});

/** What each role serves on which flag's port (services/api health routes, shared/platform/health.ts, services/cli/metrics.ts). */
function served(r: Role): Map<number, Set<string>> {
  const port = (f: string) => Number(String(r.flags.get(f)).split(':').pop());
  const out = new Map<number, Set<string>>([[port('--metrics-port'), new Set(['/metrics'])]]);
  if (r.role === 'api') out.set(port('--api-port'), new Set(['/healthz', '/readyz']));
  else out.set(port('--health'), new Set(['/healthz', '/readyz']));
  return out;
}

t.test('edges serve the certificate of the edge TLS secret, mounted read-only for their group', async (t) => {
  const e = ev();
  const edge = role(e, 'edge');
  const mount = (edge.container.volume_mount as Obj[]).find((v) => v.name === 'tls');
  t.ok(mount?.read_only, 'mounted read-only');
  t.equal(edge.flags.get('--tls-cert'), `${mount?.mount_path}/tls.crt`, '--tls-cert: the secret\'s tls.crt');
  t.equal(edge.flags.get('--tls-key'), `${mount?.mount_path}/tls.key`, '--tls-key: the secret\'s tls.key');
  const volume = (edge.pod.spec[0].volume as Obj[]).find((v) => v.name === 'tls');
  t.equal(volume?.secret[0].secret_name, VARS.edge_tls_secret, 'from var.edge_tls_secret');
  t.equal(volume?.secret[0].default_mode, '0440');
  t.equal(edge.pod.spec[0].security_context[0].fs_group, edge.pod.spec[0].security_context[0].run_as_group, 'group-readable by the edge');
});

t.test('probes call endpoints the roles serve; edges are not killed while they drain', async (t) => {
  const e = ev();
  for (const name of ['api', 'projector', 'edge'] as const) {
    const r = role(e, name);
    const endpoints = served(r);
    for (const probe of ['readiness_probe', 'liveness_probe', 'startup_probe']) {
      const p = (r.container[probe] as Obj[] | undefined)?.[0];
      if (!p) continue;
      const get = p.http_get[0];
      t.ok(endpoints.get(get.port)?.has(get.path), `${name} ${probe}: GET ${get.path} on ${get.port} is served`);
    }
    t.ok(r.container.readiness_probe, `${name}: has a readiness probe`);
    t.ok(r.container.liveness_probe, `${name}: has a liveness probe`);
  }
  const edge = role(e, 'edge');
  t.equal(edge.container.readiness_probe[0].http_get[0].path, '/readyz', 'edge readiness: its health endpoint (503 from the start of a drain)');
  t.equal(edge.container.liveness_probe[0].http_get[0].path, '/metrics', 'edge liveness: not the health endpoint, which says 503 while draining');
});

t.test('edges: drain on the way out, one LoadBalancer for control and public ports, PDB, HPA', async (t) => {
  const e = ev();
  const edge = role(e, 'edge');
  const drain = Number(edge.flags.get('--drain-timeout'));
  t.equal(drain, e.variable('drain_timeout_seconds'), '--drain-timeout is var.drain_timeout_seconds');
  const preStop = edge.container.lifecycle[0].pre_stop[0].exec[0].command as string[];
  t.same(preStop, ['sleep', String(e.variable('prestop_delay_seconds'))], 'preStop waits for the load balancer to let go before SIGTERM starts the drain');
  const grace = edge.pod.spec[0].termination_grace_period_seconds as number;
  t.ok(grace >= Number(e.variable('prestop_delay_seconds')) + drain + 15, `grace ${grace} s covers preStop, the drain and the process's 15 s shutdown grace`);
  t.equal(edge.flags.get('--advertise'), '$(POD_IP)', 'the bridge is advertised at the pod IP');
  t.same((edge.container.env as Obj[]).find((x) => x.name === 'POD_IP')?.value_from[0].field_ref[0], { field_path: 'status.podIP' }, 'from the downward API');
  t.equal(edge.flags.get('--listen-host'), '0.0.0.0');
  t.ok(edge.flags.get('--no-anonymous'), 'anonymous registration off by default');
  t.notOk(role(ev({ allow_anonymous: true }), 'edge').flags.has('--no-anonymous'), 'on with allow_anonymous');
  t.same(edge.deployment.strategy[0].rolling_update[0], { max_unavailable: 0, max_surge: 1 }, 'rolling updates drain one edge at a time');
  t.same((raw('kubernetes_deployment_v1', 'edge').lifecycle as Obj[])[0]!.ignore_changes, ['${spec[0].replicas}'], 'the HPA owns the replica count');

  const secretEnv = (edge.container.env as Obj[]).find((x) => x.name === 'TUNNOX_CLUSTER_SECRET')?.value_from[0].secret_key_ref[0];
  const secret = e.value(raw('kubernetes_secret_v1', 'tunnox'), {}) as Obj;
  t.equal(secretEnv?.name, secret.metadata[0].name, 'the cluster secret comes from the Secret');
  t.equal(secret.data[secretEnv?.key], VARS.cluster_secret, 'which holds var.cluster_secret under that key');
  t.notOk(edge.args.some((a) => a.includes(String(VARS.cluster_secret))), 'and never sits in the arguments');

  const svc = (e.value(raw('kubernetes_service_v1', 'edge'), {}) as Obj).spec[0];
  t.equal(svc.type, 'LoadBalancer', 'an L4 LoadBalancer');
  t.equal(svc.external_traffic_policy, 'Local', 'keeping visitors\' addresses (per-address limits)');
  t.same(svc.selector, edge.deployment.selector[0].match_labels, 'selecting the edge pods');
  const ports = e.blocks(raw('kubernetes_service_v1', 'edge').spec[0], 'port');
  const control = ports.find((p) => p.name === 'control');
  t.equal(control?.port, Number(edge.flags.get('--control-port')), 'the control port');
  t.equal(control?.target_port, Number(edge.flags.get('--control-port')));
  const api = role(e, 'api');
  const [min, max] = String(api.flags.get('--public-port-range')).split('-').map(Number) as [number, number];
  const ws = ports.find((p) => p.name === 'websocket');
  t.equal(ws?.port, Number(edge.flags.get('--ws-port')), 'the WebSocket port');
  t.not(Number(edge.flags.get('--ws-port')), Number(String(edge.flags.get('--health')).split(':').pop()), 'not the health port');
  const publicPorts = ports.filter((p) => p.name !== 'control' && p.name !== 'websocket').map((p) => p.port as number);
  t.same(publicPorts, Array.from({ length: max - min + 1 }, (_, i) => min + i), `every port of the API's --public-port-range ${min}-${max}`);
  t.ok(ports.every((p) => p.port === p.target_port && p.protocol === 'TCP'), 'TCP, to the same port on the pod');
  t.notOk(ports.some((p) => p.port === Number(edge.flags.get('--bridge-port')) || p.port === 9090), 'neither the bridge nor metrics are public');
  t.equal((e.value(raw('kubernetes_service_v1', 'edge'), {}) as Obj).metadata[0].annotations['external-dns.alpha.kubernetes.io/hostname'], VARS.edge_domain, 'named edge_domain');

  const pdb = (e.value(raw('kubernetes_pod_disruption_budget_v1', 'edge'), {}) as Obj).spec[0];
  t.same(pdb.selector[0].match_labels, edge.deployment.selector[0].match_labels, 'the PDB selects the edge pods');
  t.equal(pdb.max_unavailable, 1, 'one edge down at a time');

  const hpa = (e.value(raw('kubernetes_horizontal_pod_autoscaler_v2', 'edge'), {}) as Obj).spec[0];
  t.same(hpa.scale_target_ref[0], { api_version: 'apps/v1', kind: 'Deployment', name: attr(e, 'kubernetes_deployment_v1', 'edge', 'metadata', 0, 'name') }, 'the HPA scales the edge Deployment');
  t.equal(hpa.min_replicas, e.variable('edge_min_replicas'));
  t.equal(hpa.max_replicas, e.variable('edge_max_replicas'));
  t.equal(hpa.metric[0].resource[0].target[0].average_utilization, e.variable('edge_cpu_target_percent'), 'on CPU');
  t.ok(edge.container.resources[0].requests.cpu, 'which needs a CPU request');
  t.equal(hpa.behavior[0].scale_down[0].policy[0].value, 1, 'scaling down drains one edge at a time');
});

t.test('API and projector: keys, Service, Ingress, PDBs', async (t) => {
  const e = ev();
  const api = role(e, 'api');
  const keyEnv = (api.container.env as Obj[]).find((x) => x.name === 'TUNNOX_API_KEY')?.value_from[0].secret_key_ref[0];
  const secret = e.value(raw('kubernetes_secret_v1', 'tunnox'), {}) as Obj;
  t.equal(keyEnv?.name, secret.metadata[0].name, 'the API key from the Secret');
  t.equal(secret.data[keyEnv?.key], VARS.api_key, 'which holds var.api_key');
  t.equal(api.flags.get('--api-host'), '0.0.0.0');
  const apiPort = Number(api.flags.get('--api-port'));
  const svc = (e.value(raw('kubernetes_service_v1', 'api'), {}) as Obj).spec[0];
  t.same(svc.selector, api.deployment.selector[0].match_labels, 'the Service selects the API pods');
  t.equal(svc.port[0].target_port, apiPort, 'on --api-port');
  const ing = (e.value(raw('kubernetes_ingress_v1', 'api'), {}) as Obj).spec[0];
  t.equal(ing.rule[0].host, VARS.api_domain, 'the Ingress serves api_domain');
  const backend = ing.rule[0].http[0].path[0].backend[0].service[0];
  t.same({ name: backend.name, port: backend.port[0].number }, { name: attr(e, 'kubernetes_service_v1', 'api', 'metadata', 0, 'name'), port: svc.port[0].port }, 'to the API Service');
  t.same(e.blocks(raw('kubernetes_ingress_v1', 'api').spec[0], 'tls'), [], 'no TLS section without api_tls_secret');
  t.same(ev({ api_tls_secret: 'api-tls' }).blocks(raw('kubernetes_ingress_v1', 'api').spec[0], 'tls'), [{ hosts: [VARS.api_domain], secret_name: 'api-tls' }], 'TLS with it');
  t.equal(api.deployment.replicas, e.variable('api_replicas'));

  const projector = role(e, 'projector');
  t.equal(projector.deployment.replicas, e.variable('projector_replicas'));
  for (const r of [api, projector]) {
    const pdb = (e.value(raw('kubernetes_pod_disruption_budget_v1', r.role), {}) as Obj).spec[0];
    t.same(pdb.selector[0].match_labels, r.deployment.selector[0].match_labels, `${r.role}: the PDB selects its pods`);
    t.equal(pdb.min_available, 1, `${r.role}: one stays up`);
  }
  const components = ['api', 'projector', 'edge'].map((n) => role(e, n as 'api').deployment.selector[0].match_labels['app.kubernetes.io/component']);
  t.equal(new Set(components).size, 3, 'no selector matches another role\'s pods');
});
