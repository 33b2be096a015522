#!/usr/bin/env bash
# The AWS cost of a step (DESIGN.md §8), measured against moto: runs of the 5-block transform
# chain through the engine on the DynamoDB/SQS adapters, requests per step by kind, and
# $/million steps at us-east-1 list prices (constants and sources in tests/cost.rs).
#
#   bash infra/aws-cost.sh [RUNS]     # default 200 runs = 1000 steps
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/venv.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo build --release --locked -p baton-tests --bin aws-cost
exec target/release/aws-cost "${1:-200}"
