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
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  # The console's browser test (tests/tests/console.rs) drives a headless Chromium.
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || { echo "chromium and chromium-driver are required (apt-get install chromium chromium-driver)"; exit 1; }
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

step "AWS template: sam validate --lint, cfn-lint"
# Both work offline, without AWS credentials; sam only wants a region.
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 sam validate --lint --template template.yaml
cfn-lint template.yaml

step "build"
# Release builds of everything that ships or is run by the tests: the Lambda functions
# (packaged by cargo-lambda as target/lambda/<name>/bootstrap, x86_64), the local server and
# the benchmark. cargo-lambda links with zig and its own target flags, so a separate
# `cargo build --release` would compile every dependency a second time. Two invocations,
# because cargo unifies a crate's features within one: the functions that run blocks
# (execute, worker; the local server) take baton's `js` and `smtp` features (QuickJS,
# lettre), and built together with them the other five would carry both too and print
# sizes `sam build` (one function at a time) never deploys. Only baton and what depends on
# it compile twice; every other dependency has the same features in both and compiles once.
# LTO is off here only to spare CI the whole-program link steps; `sam build` deploys the
# release profile as it is (fat LTO), about 0.4 MB smaller per zip than printed below
# (measured sizes in the issue notes).
# The zip runs repeat the same packages (the same feature sets), so they only package.
plain_pkgs=()
for f in register trigger hook task-complete api; do plain_pkgs+=(-p "baton-$f"); done
block_pkgs=(-p baton-local -p baton-tests -p baton-execute -p baton-worker)
export CARGO_PROFILE_RELEASE_LTO=off
for pkgs in plain_pkgs block_pkgs; do
  declare -n group=$pkgs
  cargo lambda build --release --x86-64 --skip-target-check --locked "${group[@]}"
  cargo lambda build --release --x86-64 --skip-target-check --locked "${group[@]}" \
    --output-format zip --lambda-dir target/lambda-zip
done
unset CARGO_PROFILE_RELEASE_LTO
# cargo-lambda moves every binary it builds to target/lambda/<name>/bootstrap.
local_bin=target/lambda/baton-local/bootstrap
echo "Lambda zips (this CI build, LTO off; the deployed fat-LTO build is ~0.4 MB smaller; DESIGN.md §8 target: <= 5 MB, <= 6 MB for execute and worker):"
for f in register trigger hook task-complete api execute worker; do
  printf '  %-14s %s bytes\n' "$f" "$(stat -c %s "target/lambda-zip/$f/bootstrap.zip")"
done

step "unit, conformance, engine, HTTP and end-to-end tests"
BATON_LOCAL_BIN="$PWD/$local_bin" BATON_LAMBDA_DIR="$PWD/target/lambda" cargo nextest run --workspace --locked --no-fail-fast

step "README quickstart, as written"
bash infra/quickstart-test.sh "$local_bin"

step "README \"Triggering from outside\", as written"
BLOCK=triggering bash infra/quickstart-test.sh "$local_bin"

step "README \"CLI\" session, as written (the baton binary the tests built)"
# nextest built target/debug/baton for cli/tests/e2e.rs; the session's `baton login` writes
# into a throwaway config directory, not the CI user's.
[ -x target/debug/baton ] || cargo build --locked -p baton-cli
cli_config=$(mktemp -d)
XDG_CONFIG_HOME="$cli_config" PATH="$PWD/target/debug:$PATH" BLOCK=cli EXPECT='status    completed' \
  bash infra/quickstart-test.sh "$local_bin"
rm -rf "$cli_config"

step "seed 002's curl quickstart and Python examples, as written (fake OpenAI-compatible provider)"
python infra/seed002_test.py "$local_bin"

step "schemathesis against the served openapi.json (every check, stateful links)"
bash infra/schemathesis.sh "$local_bin"

# The benchmark binaries were built in the release step above (not run: figures come from
# infra/bench.sh and infra/aws-cost.sh).
