#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the real components
# the tests start (scripts/setup.sh), checks formatting and lints, builds
# every binary, runs every test of the workspace, and runs each benchmark
# once as a test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export PATH="$PWD/target/tools/helm:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace --quiet "$@"
# Each benchmark once, quickly, so that a change cannot leave one broken.
cargo test --workspace --benches --quiet
