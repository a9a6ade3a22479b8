#!/usr/bin/env bash
# Three-member clusters: rampart vs etcd on the same machine, same TLS setup (mutual TLS on the
# client and peer ports, certificates from one `rampart pki init`), same load generator
# (`rampart bench`, clients spread over all three endpoints). Prints a markdown table with the
# ratio rampart/etcd of each row (throughput: higher is better for rampart; latency: lower is),
# and the members' resident memory at the end.
#
#   bash bench/compare-etcd.sh                  # TOTAL=20000 requests per row by default
#   TOTAL=50000 CLIENTS="1 16 64 256" bash bench/compare-etcd.sh
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

measure() { # endpoints op clients extra... -> "ops p50 p99"
  local eps=$1 op=$2 c=$3; shift 3
  local conns=$(( c < 8 ? c : 8 ))
  "$RAMPART" bench --endpoints "$eps" --pki-dir "$P" --clients "$c" --conns "$conns" --total "$TOTAL" -w json "$op" "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.2f %.2f" % (r["ops_per_sec"], r["p50_ms"], r["p99_ms"]))'
}

row() { # label clients op extra...
  local label=$1 c=$2 op=$3; shift 3
  local r e
  r=$(measure "$r_eps" "$op" "$c" "$@")
  e=$(measure "$e_eps" "$op" "$c" "$@")
  python3 - "$label" "$c" $r $e <<'PY'
import sys
label, c, ro, rp50, rp99, eo, ep50, ep99 = sys.argv[1:]
ro, rp50, rp99, eo, ep50, ep99 = map(float, (ro, rp50, rp99, eo, ep50, ep99))
print(f"| {label} | {c} | {ro:.0f} | {rp50:.2f} | {rp99:.2f} | {eo:.0f} | {ep50:.2f} | {ep99:.2f} | {ro / eo:.2f}x | {rp50 / ep50:.2f}x |")
PY
}

rss_mib() { # pid -> resident memory in MiB
  awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

echo "| 3 members | clients | rampart ops/s | p50 ms | p99 ms | etcd $(etcd --version | head -1 | awk '{print $3}') ops/s | p50 ms | p99 ms | ops/s ratio | p50 ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for c in $CLIENTS; do row put "$c" put; done
for c in $CLIENTS; do row "range (linearizable)" "$c" range --consistency l; done
for c in $CLIENTS; do row "range (serializable)" "$c" range --consistency s; done

# pids alternate: rampart-i, etcd-i.
r_rss="" e_rss=""
for i in 0 1 2; do
  r_rss+="${r_rss:+ / }$(rss_mib "${pids[$((2 * i))]}")"
  e_rss+="${e_rss:+ / }$(rss_mib "${pids[$((2 * i + 1))]}")"
done
echo
echo "Resident memory after the run (MiB, members 0 / 1 / 2): rampart $r_rss; etcd $e_rss"
