# Tunnox — make targets. `make run` and `make test` work on a fresh clone (they install and build first).
SHELL := /bin/bash
NPM_STAMP := node_modules/.tunnox-installed

.PHONY: setup build run test test-unit test-e2e bench bench-throughput bench-echo bench-memory bench-activation bench-control-plane bench-bridge bench-cluster cluster bench-reconnect typecheck clean

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

setup: $(NPM_STAMP) build

build: $(NPM_STAMP)
	npx tsc -p tsconfig.json

typecheck: $(NPM_STAMP)
	npx tsc -p tsconfig.json --noEmit

# Standalone server: edge + API + projector, embedded PostgreSQL under ~/.local/share/tunnox/server.
run: setup
	node bin/tunnox.js server $(ARGS)

# The whole suite (unit + integration + end-to-end), against real PostgreSQL and NATS JetStream.
test: setup
	scripts/ensure-services.sh
	scripts/run-tests.sh all

test-unit: setup
	scripts/ensure-services.sh
	scripts/run-tests.sh unit

test-e2e: setup
	scripts/ensure-services.sh
	scripts/run-tests.sh e2e

bench: bench-throughput bench-echo bench-memory bench-activation

# One stream through a public mapping per agent transport (ARGS='--transport tcp,tls'), against direct, a two-hop Node relay and ssh -R (private sshd).
bench-throughput: setup
	node dist/bench/throughput.js $(ARGS)

# 64-byte request/response (1 and 50 connections) through a client-to-client mapping per transport, against 3 chained Node relays; tunnel open latency.
bench-echo: setup
	node dist/bench/echo.js $(ARGS)

# RSS per idle tunnel (N = 5000, 9000) on the edge and the target agent per transport, against a Node relay holding N connections.
bench-memory: setup
	node dist/bench/memory.js $(ARGS)

bench-activation: setup
	node dist/bench/activation.js $(ARGS)

# Management API commands/s and read-your-writes p50/p99 at 1, 16, 64 callers while agents churn, against raw appends (ARGS='--nats URL --database URL' for JetStream).
bench-control-plane: setup
	scripts/ensure-services.sh
	node dist/bench/control-plane.js $(ARGS)

# Node-to-node gRPC bridge: single stream vs a minimal grpc-js relay (64 KiB and 4 MiB windows), 200 streams × 4 MiB.
bench-bridge: setup
	node dist/bench/bridge.js $(ARGS)

# A cluster of role processes (projector, api, 2 edges): same-edge vs cross-edge vs a minimal grpc-js relay, open latency, 200 streams.
bench-cluster: setup
	scripts/ensure-services.sh
	node dist/bench/cluster.js $(ARGS)

# N agents (default 2000) on one edge of a 3-edge cluster; kill -9 that edge; time until all are online on the others.
bench-reconnect-storm: setup
	scripts/ensure-services.sh
	node dist/bench/reconnect-storm.js $(ARGS)

# NATS + PostgreSQL + projector + api + three edges on 127.0.0.1-3, and a tunnel between agents on different edges.
cluster: setup
	scripts/cluster-demo.sh $(ARGS)

# Reconnect storm: N agents (ARGS='--agents 500') log in again after an edge restart, auth codes vs session tokens.
bench-reconnect: setup
	node dist/bench/reconnect.js $(ARGS)

clean:
	rm -rf dist dist-*
