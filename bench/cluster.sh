#!/usr/bin/env bash
# Three-member clusters: rampart vs etcd on the same machine, same TLS setup (mutual TLS on the
# client and peer ports, certificates from one `rampart pki init`), same load generator
# (`rampart bench`, clients spread over all three endpoints). Prints a markdown table.
#
#   bash bench/cluster.sh                  # TOTAL=20000 requests per row by default
#   TOTAL=50000 CLIENTS="1 16 64 256" bash bench/cluster.sh
#
# Uses loopback ports 23800-23811 and a temporary directory; stops only the processes it starts.
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

wait_ready() { # endpoints
  for _ in $(seq 1 150); do
    if "$RAMPART" endpoint health --endpoints "$1" --pki-dir "$P" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "cluster at $1 did not become healthy" >&2; return 1
}

# rampart: client 2380i, peer 2380i+1; etcd: client 2380i+6, peer 2380i+7.
r_initial="" e_initial=""
for i in 0 1 2; do
  r_initial+="${r_initial:+,}rampart-$i=https://127.0.0.1:$((23801 + 2 * i))"
  e_initial+="${e_initial:+,}rampart-$i=https://127.0.0.1:$((23807 + 2 * i))"
done
r_eps="" e_eps=""
for i in 0 1 2; do
  rc=$((23800 + 2 * i)); rp=$((rc + 1)); ec=$((23806 + 2 * i)); ep=$((ec + 1))
  r_eps+="${r_eps:+,}https://127.0.0.1:$rc"; e_eps+="${e_eps:+,}https://127.0.0.1:$ec"
  "$RAMPART" serve --name "rampart-$i" --data-dir "$work/r$i" --pki-dir "$P" \
    --listen-client-urls "https://127.0.0.1:$rc" --listen-peer-urls "https://127.0.0.1:$rp" \
    --initial-cluster "$r_initial" --log-level warn >"$work/rampart-$i.log" 2>&1 &
  pids+=($!)
  M="$P/members/rampart-$i"
  etcd --name "rampart-$i" --data-dir "$work/e$i" \
    --listen-client-urls "https://127.0.0.1:$ec" --advertise-client-urls "https://127.0.0.1:$ec" \
    --listen-peer-urls "https://127.0.0.1:$ep" --initial-advertise-peer-urls "https://127.0.0.1:$ep" \
    --initial-cluster "$e_initial" --initial-cluster-token bench \
    --cert-file "$M.crt" --key-file "$M.key" --trusted-ca-file "$P/ca.crt" --client-cert-auth \
    --peer-cert-file "$M.crt" --peer-key-file "$M.key" --peer-trusted-ca-file "$P/ca.crt" \
    --peer-client-cert-auth --log-level warn >"$work/etcd-$i.log" 2>&1 &
  pids+=($!)
done
wait_ready "$r_eps"
wait_ready "$e_eps"

row() { # endpoints op clients extra...
  local eps=$1 op=$2 c=$3; shift 3
  local conns=$(( c < 8 ? c : 8 ))
  "$RAMPART" bench --endpoints "$eps" --pki-dir "$P" --clients "$c" --conns "$conns" --total "$TOTAL" -w json "$op" "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f | %.2f | %.2f" % (r["ops_per_sec"], r["p50_ms"], r["p99_ms"]))'
}

echo "| 3 members | clients | rampart ops/s | p50 ms | p99 ms | etcd $(etcd --version | head -1 | awk '{print $3}') ops/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
for c in $CLIENTS; do
  echo "| put | $c | $(row "$r_eps" put "$c") | $(row "$e_eps" put "$c") |"
done
for c in $CLIENTS; do
  echo "| range (linearizable) | $c | $(row "$r_eps" range "$c" --consistency l) | $(row "$e_eps" range "$c" --consistency l) |"
done
for c in $CLIENTS; do
  echo "| range (serializable) | $c | $(row "$r_eps" range "$c" --consistency s) | $(row "$e_eps" range "$c" --consistency s) |"
done
