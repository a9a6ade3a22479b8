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
# shellcheck source=bench/lib/two-clusters.sh
source bench/lib/two-clusters.sh
start_two_clusters 23800

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
