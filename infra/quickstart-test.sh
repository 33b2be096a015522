#!/usr/bin/env bash
# Runs a README.md block as written against a given baton-local binary.
#
#   bash infra/quickstart-test.sh target/release/baton-local
#   BLOCK=triggering bash infra/quickstart-test.sh target/release/baton-local
#
# The block is the fenced code between `<!-- $BLOCK:begin -->` and `<!-- $BLOCK:end -->`
# (BLOCK defaults to `quickstart`). Its first line that starts the server
# (`cargo run --release -p baton-local ...`), if any, is skipped: this script starts the given binary
# itself on a free loopback port with a temporary database, and rewrites `127.0.0.1:3000` /
# `localhost:3000` in the other lines to that port. The lines then run, from the repository
# root as a user would, with `bash -euo pipefail`; the output of the last command must contain
# $EXPECT (default `"completed"`). The server is stopped (by its PID) on exit. README=path
# overrides the file.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-baton-local>" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$1
case $bin in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "quickstart-test: $1 is not an executable (build it with: cargo build --release -p baton-local)" >&2
  exit 2
fi
readme=${README:-$root/README.md}
block=${BLOCK:-quickstart}
expect=${EXPECT:-'"completed"'}
if [ ! -f "$readme" ]; then
  echo "quickstart-test: $readme not found" >&2
  exit 1
fi
for tool in curl jq openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "quickstart-test: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/baton-$block.XXXXXX")
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
  echo "quickstart-test [$block]: $*" >&2
  if [ -s "$work/server.log" ]; then
    echo "--- last lines of the server log ---" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  exit 1
}

# 1. The code inside the fences between the markers.
awk -v begin="<!-- $block:begin -->" -v end="<!-- $block:end -->" '
  index($0, begin) { inside = 1; seen = 1; next }
  index($0, end)   { inside = 0; ended = 1; next }
  inside && /^[[:space:]]*```/ { fence = !fence; next }
  inside && fence { print }
  END { if (!seen || !ended) exit 3 }
' "$readme" >"$work/block.sh" || fail "no <!-- $block:begin --> ... <!-- $block:end --> block in $readme"
[ -s "$work/block.sh" ] || fail "the $block block in $readme has no fenced code"

# 2. Start the binary on a free port.
port=""
for _ in 1 2 3 4 5 6 7 8; do
  candidate=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
  if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
    continue # something listens there
  fi
  (cd "$work" && exec env -u BATON_ADDR -u BATON_DB NO_COLOR=1 "$bin" --addr "127.0.0.1:$candidate" --db "$work/baton.db") \
    >"$work/server.log" 2>&1 &
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
echo "quickstart-test: baton-local (pid $server_pid) on 127.0.0.1:$port"

# 3. Drop the line that starts the server; point the rest at our port.
mapfile -t raw <"$work/block.sh"
lines=()
skipped=0
for line in "${raw[@]}"; do
  if [ "$skipped" = 0 ] && [[ $line == *"cargo run --release -p baton-local"* ]]; then
    skipped=1
    continue
  fi
  line=${line//127.0.0.1:3000/127.0.0.1:$port}
  line=${line//localhost:3000/localhost:$port}
  lines+=("$line")
done
if [ "$skipped" = 0 ] && [ "$block" = quickstart ]; then
  echo "quickstart-test: warning: no \`cargo run --release -p baton-local\` line to skip" >&2
fi

# 4. Find where the last command starts: the latest line such that everything before it and
#    everything from it on are both complete shell text (quotes, continuations, pipes closed).
parses() { local err; err=$(bash -n 2>&1 <<<"$1") && [ -z "$err" ]; }
n=${#lines[@]}
split=-1
for ((i = n - 1; i >= 0; i--)); do
  [[ ${lines[i]} =~ ^[[:space:]]*(#.*)?$ ]] && continue
  prev=""
  for ((j = i - 1; j >= 0; j--)); do
    if [[ ! ${lines[j]} =~ ^[[:space:]]*$ ]]; then
      prev=${lines[j]}
      break
    fi
  done
  [[ $prev =~ \\[[:space:]]*$ ]] && continue
  head=$(printf '%s\n' "${lines[@]:0:i}")
  tail=$(printf '%s\n' "${lines[@]:i}")
  if parses "$head" && parses "$tail"; then
    split=$i
    break
  fi
done
[ "$split" -ge 0 ] || fail "the $block block has no command to run (or does not parse)"

{
  printf '%s\n' "${lines[@]:0:split}"
  printf '{\n'
  printf '%s\n' "${lines[@]:split}"
  printf '} >%q\n' "$work/last.out"
  printf 'cat %q\n' "$work/last.out"
} >"$work/quickstart.sh"

echo "quickstart-test: running (from $root):"
sed 's/^/  | /' "$work/quickstart.sh"
echo
status=0
(cd "$root" && timeout 300 bash -euo pipefail "$work/quickstart.sh") || status=$?
[ "$status" = 0 ] || fail "the $block commands failed (exit $status)"
[ -f "$work/last.out" ] || fail "the last command did not run"
grep -qF -- "$expect" "$work/last.out" ||
  fail "the last command's output does not contain $expect: $(head -c 2000 "$work/last.out")"
echo
echo "quickstart-test [$block]: ok (the last command printed $expect)"
