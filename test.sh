#!/usr/bin/env bash
# Runs every test of mape-rs. Installs what the tests need when it is missing.
# Usage: ./test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")"

echo "== unit, integration and property tests"
cargo test --all-targets --locked

echo "== formatting and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
