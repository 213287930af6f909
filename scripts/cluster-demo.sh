#!/usr/bin/env bash
# A Tunnox cluster on one machine, one process per role: NATS JetStream and PostgreSQL (started if
# they are not running), `tunnox projector`, `tunnox api` and three `tunnox edge` processes on
# 127.0.0.1, 127.0.0.2 and 127.0.0.3 (each binds every listener to its own address, so all three use
# the same ports). Then it shows tunnels between agents on different edges: a client-to-client
# mapping (source agent on edge 1, target agent on edge 2) and a public mapping entered through
# edge 3, which does not hold the target agent.
#
#   scripts/cluster-demo.sh           run it, print how to use it, stop everything on Ctrl-C
#   scripts/cluster-demo.sh --check   the same, then stop and clean up (exit 0 when the tunnels worked)
#
# Settings (environment): DEMO_NAME (database, stream and subject prefix; default tunnox_demo),
# DEMO_API_PORT (9100), DEMO_CONTROL_PORT (8080), DEMO_BRIDGE_PORT (50052), DEMO_LOCAL_PORT (18080),
# DEMO_METRICS_PORT (9090: GET /metrics of the projector on 127.0.0.1:PORT, the api on 127.0.0.1:PORT+1,
# each edge on its own address at PORT+2; 0 turns metrics off), TUNNOX_NATS_URL (nats://127.0.0.1:4222),
# DEMO_PG_URL (postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = --check ] && check=1

name=${DEMO_NAME:-tunnox_demo}
[[ $name =~ ^[a-z][a-z0-9_]*$ ]] || { echo "cluster-demo: DEMO_NAME must be lower-case letters, digits and _" >&2; exit 2; }
stream=$(tr '[:lower:]' '[:upper:]' <<<"$name")
nats=${TUNNOX_NATS_URL:-nats://127.0.0.1:4222}
pg_admin=${DEMO_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=${pg_admin%/*}/$name
api_port=${DEMO_API_PORT:-9100}
control_port=${DEMO_CONTROL_PORT:-8080}
bridge_port=${DEMO_BRIDGE_PORT:-50052}
local_port=${DEMO_LOCAL_PORT:-18080}
metrics_port=${DEMO_METRICS_PORT:-9090}
hosts=(127.0.0.1 127.0.0.2 127.0.0.3)
logs=$(mktemp -d "${TMPDIR:-/tmp}/tunnox-cluster-demo.XXXXXX")
export TUNNOX_CLUSTER_SECRET=${TUNNOX_CLUSTER_SECRET:-$(node -e "process.stdout.write(require('node:crypto').randomBytes(24).toString('hex'))")}
export TUNNOX_API_KEY=${TUNNOX_API_KEY:-tnxk_demo_$(node -e "process.stdout.write(require('node:crypto').randomBytes(16).toString('hex'))")}
common=(--nats "$nats" --stream "$stream" --subject-prefix "$name")
pids=()
# One metrics port per process on a machine: `metrics N HOST` gives process N's flags (0 = off).
metrics() {
  if [ "$metrics_port" = 0 ]; then echo --metrics-port 0; else echo --metrics-host "$2" --metrics-port $((metrics_port + $1)); fi
}

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# Removes the demo's database, stream, state stream and KV buckets (what a previous run left, too).
reset_state() {
  node --input-type=module -e "
    import pg from 'pg';
    import { connect } from '@nats-io/transport-node';
    import { jetstreamManager } from '@nats-io/jetstream';
    const [adminUrl, db, stream, prefix, create] = process.argv.slice(1);
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query('DROP DATABASE IF EXISTS \"' + db + '\" WITH (FORCE)');
    if (create === '1') await admin.query('CREATE DATABASE \"' + db + '\"');
    await admin.end();
    const nc = await connect({ servers: '$nats' });
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      if (s.config.name === stream || s.config.name.startsWith(stream + '_') || s.config.name.startsWith('KV_' + prefix + '_')) await jsm.streams.delete(s.config.name);
    }
    await nc.close();
  " "$pg_admin" "$name" "$stream" "$name" "$1"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping (SIGTERM to every process)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "$check" = 1 ]; then reset_state 0 || true; rm -rf "$logs"; else echo "logs kept in $logs"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bg NAME CMD...: runs CMD in the background, logging to $logs/NAME.log.
bg() {
  local log=$logs/$1.log
  shift
  "$@" >"$log" 2>&1 &
  pids+=($!)
}
# start NAME ARGS...: `tunnox ARGS` in the background.
start() {
  local name=$1
  shift
  bg "$name" node bin/tunnox.js "$@"
}

# wait_for LOG MESSAGE: until the process logging to LOG prints a line with MESSAGE (60 s).
wait_for() {
  for _ in $(seq 1 300); do
    grep -q "\"msg\":\"$2\"" "$logs/$1.log" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "cluster-demo: $1 did not report \"$2\"; its log:" >&2
  tail -20 "$logs/$1.log" >&2
  return 1
}

api() {
  curl -sS -H "Authorization: Bearer $TUNNOX_API_KEY" -H 'content-type: application/json' "$@"
}

# field JSON PATH: one field of a JSON document (PATH like .client_id or .nodes.0.node_id).
field() {
  node -e "let v=JSON.parse(process.argv[1]); for (const k of process.argv[2].split('.').filter(Boolean)) v=v?.[k]; process.stdout.write(String(v))" "$1" "$2"
}

scripts/ensure-services.sh
[ -f dist/services/cli/main.js ] || { echo "cluster-demo: build first (make setup)" >&2; exit 1; }
reset_state 1

say "projector, api and three edges (logs in $logs)"
# shellcheck disable=SC2046 # metrics prints separate flags
start projector projector "${common[@]}" --database "$database" $(metrics 0 127.0.0.1)
wait_for projector 'tunnox projector ready'
# shellcheck disable=SC2046
start api api "${common[@]}" --database "$database" --api-port "$api_port" $(metrics 1 127.0.0.1)
for i in 0 1 2; do
  # shellcheck disable=SC2046 # every edge on its own address, so all three use the same ports
  start "edge$((i + 1))" edge "${common[@]}" --listen-host "${hosts[$i]}" --control-port "$control_port" --ws-port 0 --data-dir "$logs/edge$((i + 1))-data" --bridge-port "$bridge_port" $(metrics 2 "${hosts[$i]}")
done
wait_for api 'tunnox api ready'
for i in 1 2 3; do wait_for "edge$i" 'tunnox edge ready'; done
base=$(field "$(grep '"tunnox api ready"' "$logs/api.log")" .apiUrl)/api/v1
edge_addr=()
for i in 1 2 3; do edge_addr+=("$(field "$(grep '"tunnox edge ready"' "$logs/edge$i.log")" .controlAddress)"); done
api "$base/nodes" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{for (const n of JSON.parse(s).nodes) console.log('  ' + n.node_id + '  control ' + n.addresses.control + '  bridge ' + n.addresses.bridge)})"

say "a user, two managed clients and their agents: source on edge 1, target on edge 2"
user=$(field "$(api -X POST "$base/users" -d '{"username":"demo","email":"demo@example.com"}')" .user_id)
src=$(api -X POST "$base/clients" -d "{\"user_id\":$user,\"client_name\":\"laptop\"}")
tgt=$(api -X POST "$base/clients" -d "{\"user_id\":$user,\"client_name\":\"office\"}")
src_id=$(field "$src" .client_id)
tgt_id=$(field "$tgt" .client_id)
start agent-source client --server "${edge_addr[0]}" --client-id "$src_id" --auth-code "$(field "$src" .auth_code)" --credentials "$logs/source.json"
start agent-target client --server "${edge_addr[1]}" --client-id "$tgt_id" --auth-code "$(field "$tgt" .auth_code)" --credentials "$logs/target.json"
for id in "$src_id" "$tgt_id"; do
  for _ in $(seq 1 150); do [ "$(field "$(api "$base/clients/$id")" .status)" = online ] && break; sleep 0.2; done
  echo "  client $id: $(field "$(api "$base/clients/$id")" .status) on $(field "$(api "$base/clients/$id")" .node_id)"
done

say "a service next to the target agent (127.0.0.1, any free port)"
bg service node -e "
  const http = require('node:http');
  const s = http.createServer((q, r) => r.end('hello from the service behind the target agent\n'));
  s.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ msg: 'service ready', port: s.address().port })));"
wait_for service 'service ready'
service_port=$(field "$(grep '"service ready"' "$logs/service.log")" .port)

say "client-to-client mapping: localhost:$local_port on the source agent -> the service, through edge 1 -> bridge -> edge 2"
mapping=$(api -X POST "$base/mappings" -d "{\"user_id\":$user,\"source_client_id\":$src_id,\"target_client_id\":$tgt_id,\"protocol\":\"tcp\",\"target_host\":\"127.0.0.1\",\"target_port\":$service_port,\"local_port\":$local_port}")
mapping_id=$(field "$mapping" .mapping_id)
for _ in $(seq 1 150); do [ "$(field "$(api "$base/mappings/$mapping_id")" .status)" = active ] && break; sleep 0.2; done
echo "  \$ curl http://127.0.0.1:$local_port/"
c2c_answer=$(curl -sS --max-time 10 "http://127.0.0.1:$local_port/")
echo "  $c2c_answer"

say "public mapping, entered through edge 3 (127.0.0.3), which bridges to edge 2"
public=$(api -X POST "$base/mappings" -d "{\"user_id\":$user,\"target_client_id\":$tgt_id,\"protocol\":\"tcp\",\"target_host\":\"127.0.0.1\",\"target_port\":$service_port}")
public_port=$(field "$public" .public_port)
pub_answer=""
for _ in $(seq 1 150); do pub_answer=$(curl -sS --max-time 5 "http://${hosts[2]}:$public_port/" 2>/dev/null) && break; sleep 0.2; done
echo "  \$ curl http://${hosts[2]}:$public_port/"
echo "  $pub_answer"

if [[ $c2c_answer != hello* || $pub_answer != hello* ]]; then
  echo "cluster-demo: a tunnel did not answer" >&2
  exit 1
fi

if [ "$metrics_port" != 0 ]; then
  say "metrics (Prometheus): tunnels opened on each edge, by kind of visitor side"
  for i in 1 2 3; do
    addr=$(field "$(grep '"tunnox edge ready"' "$logs/edge$i.log")" .metrics)
    echo "  edge $i  http://$addr/metrics"
    curl -sS --max-time 5 "http://$addr/metrics" | grep '^tunnox_edge_tunnels_opened_total' | sed 's/^/    /' || true
  done
  for role in projector api; do
    echo "  $role  http://$(field "$(grep "\"tunnox $role ready\"" "$logs/$role.log")" .metrics)/metrics"
  done
fi
if [ "$check" = 1 ]; then
  say "both tunnels answered"
  exit 0
fi
say "running. Management API: $base (Authorization: Bearer $TUNNOX_API_KEY). Ctrl-C stops everything."
wait
