#!/usr/bin/env bash
# Makes sure the services the test suite talks to are running on loopback:
# PostgreSQL 15 on 127.0.0.1:5432 (user postgres trusted from 127.0.0.1) and NATS with JetStream on 127.0.0.1:4222.
# Installs them from Debian's packages when missing (CI runs as root on Debian).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ensure-services: installing PostgreSQL" >&2
    apt_install postgresql
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  # The suite connects as postgres over 127.0.0.1 without a password: one marked rule for exactly
  # that, added once; the cluster's other rules (and so everyone else's authentication) stay.
  as_root "$here/pg-hba-allow-tests.sh" "$hba"
  echo "ensure-services: starting PostgreSQL $ver" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  for _ in $(seq 1 50); do port_open 5432 && break; sleep 0.2; done
fi
port_open 5432 || { echo "ensure-services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

if ! port_open 4222; then
  if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    echo "ensure-services: installing nats-server" >&2
    apt_install nats-server
  fi
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  as_root mkdir -p /var/lib/nats-server
  echo "ensure-services: starting NATS with JetStream" >&2
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  for _ in $(seq 1 50); do port_open 4222 && break; sleep 0.2; done
fi
port_open 4222 || { echo "ensure-services: NATS is not reachable on 127.0.0.1:4222" >&2; exit 1; }
# Binaries the transport tests start themselves: tinyproxy (a real HTTP CONNECT proxy, on a port
# of the test's choosing) and openssl (the tests' own CA and certificates).
missing=()
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || missing+=(tinyproxy-bin)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-services: installing ${missing[*]}" >&2
  apt_install "${missing[@]}"
fi
echo "ensure-services: PostgreSQL and NATS are up; tinyproxy and openssl installed" >&2
