#!/usr/bin/env bash
# Runs the compiled test suite with tap in two tiers and prints "N passed, N failed" last.
#   unit: every *.test.js outside dist/test/e2e (fast; files run in parallel)
#   e2e:  dist/test/e2e (spawns real tunnox processes; one file at a time)
set -uo pipefail
tier=${1:-all}
cd "$(dirname "$0")/.."
passed=0; failed=0; status=0
log=$(mktemp)

run_tier() {
  local name=$1; shift
  echo "== $name tests" >&2
  npx tap --disable-coverage "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local summary
  # -a: a test may print any byte (hostile-input tests do); the summary must still be found.
  summary=$(grep -aE '^# \{ total: ' "$log" | tail -1)
  local p f
  p=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary"); f=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
  p=${p:-0}; f=${f:-0}
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi   # a crash or timeout without a counted failure still fails
  if [ -z "$summary" ]; then echo "no tap summary for $name tests (exit $rc)" >&2; f=$((f + 1)); status=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  [ "$rc" = 0 ] || status=1
}

mapfile -t unit_files < <(find dist -name '*.test.js' -not -path 'dist/test/e2e/*' -not -path 'dist-*' | sort)
mapfile -t e2e_files < <(find dist/test/e2e -name '*.test.js' 2>/dev/null | sort)

if [ "$tier" = all ] || [ "$tier" = unit ]; then
  if [ ${#unit_files[@]} -gt 0 ]; then run_tier unit --jobs=2 "${unit_files[@]}"; else echo "no unit tests found" >&2; status=1; fi
fi
if [ "$tier" = all ] || [ "$tier" = e2e ]; then
  if [ ${#e2e_files[@]} -gt 0 ]; then run_tier e2e --jobs=1 "${e2e_files[@]}"; else echo "no e2e tests found" >&2; status=1; fi
fi
rm -f "$log"
echo "$passed passed, $failed failed"
exit $status
