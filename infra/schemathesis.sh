#!/usr/bin/env bash
# Runs schemathesis (pinned in infra/requirements.txt) against a given baton-local binary,
# with every check (schemathesis's default), so the served openapi.json must be true to it:
#
#   bash infra/schemathesis.sh target/debug/baton-local
#
# Starts the binary on a free loopback port with a temporary database (rate limits raised:
# schemathesis sends thousands of requests, and a 429 is not what it is testing), registers
# an account for an API key, runs every phase (examples, coverage, fuzzing, and the stateful
# phase that follows the document's links from each create to what uses its id) with a
# small --max-examples, and stops the server by its PID. Exit status: schemathesis's.
# MAX_EXAMPLES (default 20), SEED and WORKERS (default 1: Python 3.11's `ast` is not safe to
# use from two threads at once, which schemathesis does with more) override the bounds.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-baton-local>" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$1
case $bin in /*) ;; *) bin="$PWD/$bin" ;; esac
[ -x "$bin" ] || { echo "schemathesis: $1 is not an executable" >&2; exit 2; }
st=${SCHEMATHESIS:-$root/.venv/bin/schemathesis}
[ -x "$st" ] || st=$(command -v schemathesis) || { echo "schemathesis: not installed (bash infra/venv.sh)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/baton-schemathesis.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "schemathesis: $*" >&2
  [ -s "$work/server.log" ] && { echo "--- last lines of the server log ---" >&2; tail -n 40 "$work/server.log" >&2; }
  exit 1
}

port=""
for _ in 1 2 3 4 5 6 7 8; do
  candidate=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
  if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    continue # something listens there
  fi
  (cd "$work" && exec env -u BATON_ADDR -u BATON_DB NO_COLOR=1 RUST_LOG=warn \
    BATON_RATE_LIMIT=1000000 BATON_REGISTER_LIMIT=1000000 \
    "$bin" --addr "127.0.0.1:$candidate" --db "$work/baton.db") >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$candidate/api/v1/health" 2>/dev/null; then
      port=$candidate
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$port" ] && break
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
done
[ -n "$port" ] || fail "could not start $bin (tried several ports)"
base="http://127.0.0.1:$port"
echo "schemathesis: baton-local (pid $server_pid) on 127.0.0.1:$port"

key=$(curl -fsS -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"name": "schemathesis"}' | jq -er .api_key) || fail "could not register an account"

# The document as served, so what is checked is what callers get.
curl -fsS "$base/api/v1/openapi.json" -o "$work/openapi.json" || fail "no /api/v1/openapi.json"

# Every check runs: that is schemathesis's default, the same set as `--checks all`, which is
# not passed because it would also switch back on the one check schemathesis.toml turns off
# for one family of operations (use-after-free under /runs/{id}: a DELETE there cancels).
status=0
(cd "$work" && "$st" --config-file "$root/infra/schemathesis.toml" run "$work/openapi.json" --url "$base" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${MAX_EXAMPLES:-20}" \
  --workers "${WORKERS:-1}" \
  ${SEED:+--seed "$SEED"} \
  --request-timeout 30 \
  --header "X-API-Key: $key" \
  --no-color) || status=$?
[ "$status" = 0 ] || fail "schemathesis reported failures (exit $status)"
