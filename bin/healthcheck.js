#!/usr/bin/env node
// The container image's HEALTHCHECK: one GET, exit 0 on a 2xx answer within 3 s, 1 otherwise.
// Default: the process's own metrics endpoint (every role serves it, on 127.0.0.1:9090 unless
// --metrics-port/$TUNNOX_METRICS_PORT says otherwise): the process is up and its event loop
// answers. $TUNNOX_HEALTHCHECK_URL (or the first argument) checks something else, e.g.
// http://127.0.0.1:9000/readyz for `tunnox server` (database and event log answer). Kubernetes
// does not use this: its probes call the roles' health endpoints (infra/terraform).
const port = process.env.TUNNOX_METRICS_PORT || '9090';
const url = process.argv[2] || process.env.TUNNOX_HEALTHCHECK_URL || `http://127.0.0.1:${port}/metrics`;
if (!process.argv[2] && !process.env.TUNNOX_HEALTHCHECK_URL && port === '0') {
  process.stderr.write('healthcheck: metrics are off (TUNNOX_METRICS_PORT=0); set TUNNOX_HEALTHCHECK_URL\n');
  process.exit(1);
}
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
  await res.arrayBuffer();
  if (res.status >= 200 && res.status < 300) process.exit(0);
  process.stderr.write(`healthcheck: ${url} answered ${res.status}\n`);
} catch (err) {
  process.stderr.write(`healthcheck: ${url}: ${err instanceof Error ? err.message : String(err)}\n`);
}
process.exit(1);
