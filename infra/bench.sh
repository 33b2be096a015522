#!/usr/bin/env bash
# Benchmarks the local server against DESIGN.md §8 (a benchmark: prints figures, judges nothing).
# Builds release baton-local and the bench binary, then runs it; any arguments go to the bench:
#   bash infra/bench.sh [--runs 20000] [--concurrency 64] [--sync-calls 2000] [--starts 5]
#                       [--workers N] [--client-threads 1] [--only startup,sync,throughput]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo build --release --locked -p baton-local -p baton-tests --bins
target_dir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
exec "$target_dir/release/bench" --bin "$target_dir/release/baton-local" "$@"
