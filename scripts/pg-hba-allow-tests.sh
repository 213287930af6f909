#!/usr/bin/env bash
# Lets the test suite in: adds ONE rule to a pg_hba.conf, trusting the `postgres` user over TCP from
# 127.0.0.1 only, ahead of the other rules (the first matching rule wins). It is marked as Tunnox's
# and added once; every other line stays as it was, so the machine's PostgreSQL keeps its own
# authentication for everyone and everything else.
#   usage: scripts/pg-hba-allow-tests.sh /etc/postgresql/15/main/pg_hba.conf
set -euo pipefail
hba=${1:?usage: $0 PG_HBA_CONF}
marker='tunnox-test-access'
rule="host    all             postgres        127.0.0.1/32            trust   # $marker: added by Tunnox's scripts/ensure-services.sh for its test suite"

[ -f "$hba" ] || { echo "pg-hba-allow-tests: no such file: $hba" >&2; exit 1; }
grep -q "# $marker:" "$hba" && exit 0

tmp=$(mktemp "$hba.tunnox.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Before the first rule (a line that is neither blank nor a comment), or at the end if there is none.
awk -v rule="$rule" '
  !done && $0 !~ /^[[:space:]]*(#|$)/ { print rule; done = 1 }
  { print }
  END { if (!done) print rule }
' "$hba" >"$tmp"
# Keep the file's owner and mode (postgres:postgres 0640 on Debian), then swap it in.
chmod --reference="$hba" "$tmp"
chown --reference="$hba" "$tmp" 2>/dev/null || true
mv "$tmp" "$hba"
trap - EXIT
echo "pg-hba-allow-tests: trusted user postgres from 127.0.0.1 in $hba" >&2
