#!/usr/bin/env bash
# Runs every test Baton has, installing what it needs first. CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

step "tools"
if ! command -v jq >/dev/null 2>&1; then
  # The README's quickstart uses jq, and its test runs those lines as written.
  (apt-get update -qq && apt-get install -y -qq jq) >/dev/null 2>&1 || { echo "jq is required (apt-get install jq)"; exit 1; }
fi
if ! command -v openssl >/dev/null 2>&1; then
  # The webhook tests and the README's signing example use `openssl dgst -hmac`.
  (apt-get update -qq && apt-get install -y -qq openssl) >/dev/null 2>&1 || { echo "openssl is required (apt-get install openssl)"; exit 1; }
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# moto, cfn-lint, aws-sam-cli, cargo-lambda, standardwebhooks: pinned in infra/requirements.txt.
bash infra/venv.sh
export PATH="$PWD/.venv/bin:$PATH"

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked
cargo build --release --locked -p baton-local

step "unit, conformance, engine, HTTP and end-to-end tests"
BATON_LOCAL_BIN="$PWD/target/release/baton-local" cargo nextest run --workspace --locked --no-fail-fast

step "README quickstart, as written"
bash infra/quickstart-test.sh target/release/baton-local

step "README \"Triggering from outside\", as written"
BLOCK=triggering bash infra/quickstart-test.sh target/release/baton-local

step "benchmark builds (not run: figures come from infra/bench.sh)"
cargo build --release --locked -p baton-tests --bins
