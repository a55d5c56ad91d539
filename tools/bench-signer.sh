#!/usr/bin/env bash
# The remote-signer latency benchmark (docs/benchmarks.md): builds the
# release binaries it runs (signer, lssd), then the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sphinx-signer -p lssd -p sphinx-broker --bins
cargo bench -p sphinx-broker --bench latency "$@"
