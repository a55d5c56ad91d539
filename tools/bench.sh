#!/usr/bin/env bash
# Runs lss-bench against a freshly started server and prints its report.
#
#   tools/bench.sh ours|reference redb|postgres [lss-bench options...]
#
# ours:      target/release/lssd (built here with --release).
# reference: the crates.io lssd 0.5.1, installed with
#            PROTOC=$PWD/tools/protoc cargo install lssd --version 0.5.1 --features postgres --root /tmp/reflssd
#            (or set REFERENCE_LSSD to its path).
# postgres:  the local PostgreSQL (127.0.0.1:5432, user postgres, trust); each run gets a fresh
#            database lk_bench_ours / lk_bench_reference.
# Each run starts on an empty store and uses the same port (56100) and workload options.
# PLACEMENT=split (default) pins the server to CPU 0 and lss-bench to CPU 1 (taskset), so the
# load generator does not take the server's core; PLACEMENT=shared lets the kernel place both.
# PostgreSQL itself is never pinned.
set -euo pipefail
placement=${PLACEMENT:-split}
case "$placement" in
  split) server_cpu=(taskset -c 0); bench_cpu=(taskset -c 1) ;;
  shared) server_cpu=(); bench_cpu=() ;;
  *) echo "PLACEMENT is split or shared, not $placement" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
server=${1:?ours or reference}; backend=${2:?redb or postgres}; shift 2
port=56100
data=$(mktemp -d /tmp/lk-bench.XXXXXX)
db="lk_bench_${server}"
cargo build --release -q -p lssd -p lss-bench
if [ "$backend" = postgres ]; then
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
fi
case "$server/$backend" in
  ours/redb) cmd=(target/release/lssd --listen 127.0.0.1:$port --data-dir "$data") ;;
  ours/postgres) cmd=(target/release/lssd --listen 127.0.0.1:$port --data-dir "$data" --database postgres
                      --postgres-url "postgres://postgres@127.0.0.1:5432/$db") ;;
  reference/*)
    ref=${REFERENCE_LSSD:-/tmp/reflssd/bin/lssd}
    mkdir -p "$data/lss"  # the reference does not create its data directory
    export PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_DB=$db HOME=$data
    cmd=("$ref" --port $port --datadir "$data/lss" --database "$backend") ;;
  *) echo "unknown server/backend $server/$backend" >&2; exit 2 ;;
esac
RUST_LOG=warn "${server_cpu[@]}" "${cmd[@]}" >"$data/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
io=()
[ "$backend" = postgres ] && io=(--io-process-name postgres)
echo "placement: $placement" >&2
"${bench_cpu[@]}" target/release/lss-bench --server http://127.0.0.1:$port --server-pid $pid "${io[@]}" "$@"
