#!/usr/bin/env bash
# Single-member throughput and latency: rampart vs etcd on the same machine, same TLS setup
# (mutual TLS with certificates from one `rampart pki init`), same load generator
# (`rampart bench`). Prints a markdown table.
#
#   bash bench/kv.sh                 # TOTAL=20000 requests per row by default
#   TOTAL=50000 CLIENTS="1 16 64 256" bash bench/kv.sh
#
# Uses loopback ports 23790-23799 and a temporary directory; stops only the processes it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-20000}"
CLIENTS="${CLIENTS:-1 16 64 256}"
TARGET="${CARGO_TARGET_DIR:-target}"
RAMPART="$TARGET/release/rampart"
cargo build --release --bin rampart >/dev/null 2>&1 || cargo build --release --bin rampart
command -v etcd >/dev/null || { echo "etcd is not installed: run make deps" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$RAMPART" pki init --dir "$work/pki" >/dev/null
P="$work/pki"

wait_ready() { # endpoint
  for _ in $(seq 1 100); do
    if "$RAMPART" endpoint health --endpoints "$1" --pki-dir "$P" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "server at $1 did not become healthy" >&2; return 1
}

"$RAMPART" serve --name rampart-0 --data-dir "$work/rampart" --pki-dir "$P" \
  --listen-client-urls https://127.0.0.1:23790 --listen-peer-urls https://127.0.0.1:23791 \
  --log-level warn >"$work/rampart.log" 2>&1 &
pids+=($!)
etcd --name rampart-0 --data-dir "$work/etcd" \
  --listen-client-urls https://127.0.0.1:23792 --advertise-client-urls https://127.0.0.1:23792 \
  --listen-peer-urls https://127.0.0.1:23793 --initial-advertise-peer-urls https://127.0.0.1:23793 \
  --initial-cluster rampart-0=https://127.0.0.1:23793 \
  --cert-file "$P/members/rampart-0.crt" --key-file "$P/members/rampart-0.key" \
  --trusted-ca-file "$P/ca.crt" --client-cert-auth \
  --peer-cert-file "$P/members/rampart-0.crt" --peer-key-file "$P/members/rampart-0.key" \
  --peer-trusted-ca-file "$P/ca.crt" --peer-client-cert-auth --log-level warn >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_ready https://127.0.0.1:23790
wait_ready https://127.0.0.1:23792

row() { # name endpoint op clients extra...
  local name=$1 ep=$2 op=$3 c=$4; shift 4
  local conns=$(( c < 8 ? c : 8 ))
  "$RAMPART" bench --endpoints "$ep" --pki-dir "$P" --clients "$c" --conns "$conns" --total "$TOTAL" -w json "$op" "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f | %.2f | %.2f" % (r["ops_per_sec"], r["p50_ms"], r["p99_ms"]))'
}

echo "| workload | clients | rampart ops/s | p50 ms | p99 ms | etcd $(etcd --version | head -1 | awk '{print $3}') ops/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for c in $CLIENTS; do
  echo "| put | $c | $(row rampart https://127.0.0.1:23790 put "$c") | $(row etcd https://127.0.0.1:23792 put "$c") |"
done
for c in $CLIENTS; do
  echo "| range (linearizable) | $c | $(row rampart https://127.0.0.1:23790 range "$c" --consistency l) | $(row etcd https://127.0.0.1:23792 range "$c" --consistency l) |"
done
for c in $CLIENTS; do
  echo "| range (serializable) | $c | $(row rampart https://127.0.0.1:23790 range "$c" --consistency s) | $(row etcd https://127.0.0.1:23792 range "$c" --consistency s) |"
done
