#!/usr/bin/env bash
# Watch fan-out and lease keep-alive on three-member clusters: rampart vs etcd on the same
# machine, same TLS setup (mutual TLS on the client and peer ports, certificates from one
# `rampart pki init`), same load generator (`rampart bench watch-fanout|lease-keepalive`).
# Prints a markdown table.
#
# Watch fan-out: watchers on one key, one writer putting stamped values; events/s counts every
# event delivered to every watcher, latency is put sent -> event received. A watcher that
# misses, repeats or reorders an event fails the row. 10,000 watchers are opened as etcd's Go
# client would for watchers sharing a context: many watchers per stream (here 10 x 1000). The
# fan-out runs once with puts back to back (throughput; latency then includes queueing) and
# once at a steady pace the cluster can follow (latency).
#
# Endpoints are listed leader first for both clusters, so that the writer, the single watcher
# and the single keep-alive client talk to the leader in both, and the roles of the spread
# connections match. The last column is rampart/etcd: above 1 is better for events/s and
# requests/s, below 1 is better for latency.
#
#   bash bench/watch.sh
#   FANOUT_WATCHERS=20000 FANOUT_PUTS=100 KA_CLIENTS="1 16 64" bash bench/watch.sh
#
# Uses loopback ports 23820-23831 and a temporary directory; stops only the processes it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SINGLE_PUTS="${SINGLE_PUTS:-2000}"           # puts seen by the single watcher
FANOUT_WATCHERS="${FANOUT_WATCHERS:-10000}"  # watchers in the fan-out row
FANOUT_STREAMS="${FANOUT_STREAMS:-10}"       # streams they share
FANOUT_PUTS="${FANOUT_PUTS:-300}"            # puts back to back, each delivered to every watcher
PACED_PUTS="${PACED_PUTS:-100}"              # puts in the paced fan-out row
PACED_RATE="${PACED_RATE:-10}"               # their pace, puts/s
VAL_SIZE="${VAL_SIZE:-256}"
KA_CLIENTS="${KA_CLIENTS:-1 64}"             # keep-alive streams, one request in flight each
KA_TOTAL="${KA_TOTAL:-50000}"                # keep-alives per row
KA_LEASES="${KA_LEASES:-100}"                # leases they go round-robin over
TIMEOUT="${TIMEOUT:-2m}"                     # per phase of one run; a run that takes longer fails
# shellcheck source=bench/lib/two-clusters.sh
source bench/lib/two-clusters.sh
start_two_clusters 23820

leader_first() { # endpoints -> the same endpoints, the leader's first (unchanged if unknown)
  "$RAMPART" endpoint status --endpoints "$1" --pki-dir "$P" -w json 2>/dev/null | python3 -c '
import json, sys
eps = sys.argv[1].split(",")
try:
    st = json.load(sys.stdin)
    lead = [s["Endpoint"] for s in st if s["Status"]["header"]["member_id"] == s["Status"]["leader"]]
except (ValueError, KeyError, TypeError):
    lead = []
print(",".join(lead[:1] + [e for e in eps if e not in lead[:1]]))' "$1"
}
r_eps="$(leader_first "$r_eps")"
e_eps="$(leader_first "$e_eps")"

measure() { # endpoints bench-args... ; prints the path of its JSON report (without .json)
  local eps=$1; shift
  local out
  # Called in $(...), so a counter would not survive: a fresh name per run instead.
  out="$(mktemp -u "$work/run.XXXXXX")"
  if ! "$RAMPART" bench --endpoints "$eps" --pki-dir "$P" -w json "$@" >"$out.json" 2>"$out.err"; then
    # The report is printed before the error; the table marks the row.
    echo "bench $* against $eps failed: $(cat "$out.err")" >&2
    touch "$out.failed"
  fi
  echo "$out"
}

row() { # label metric-key metric-label rampart-run etcd-run
  python3 - "$@" <<'EOF'
import json, os, sys
label, key, metric, r, e = sys.argv[1:6]
def load(path):
    try:
        with open(path + ".json") as f:
            return json.loads(f.read().strip().splitlines()[-1]), os.path.exists(path + ".failed")
    except (OSError, ValueError, IndexError):
        return None, True
def cell(run):
    data, failed = run
    if data is None:
        return "failed", None
    v = data.get(key)
    text = "%.0f" % v if key.endswith("per_sec") else "%.2f" % v
    return text + (" (failed)" if failed else ""), v
rt, rv = cell(load(r))
et, ev = cell(load(e))
ratio = "%.2f" % (rv / ev) if rv is not None and ev else "-"
print("| %s | %s | %s | %s | %s |" % (label, metric, rt, et, ratio))
EOF
}

per_stream=$((FANOUT_WATCHERS / FANOUT_STREAMS))
echo "| scenario | metric | rampart | etcd $(etcd --version | head -1 | awk '{print $3}') | rampart/etcd |"
echo "|---|---|---|---|---|"
r=$(measure "$r_eps" --conns 1 watch-fanout --watchers 1 --streams 1 --puts "$SINGLE_PUTS" --val-size "$VAL_SIZE" --timeout "$TIMEOUT")
e=$(measure "$e_eps" --conns 1 watch-fanout --watchers 1 --streams 1 --puts "$SINGLE_PUTS" --val-size "$VAL_SIZE" --timeout "$TIMEOUT")
label="watch, 1 watcher, $SINGLE_PUTS puts"
row "$label" events_per_sec "events/s" "$r" "$e"
row "$label" p99_ms "p99 ms" "$r" "$e"
fan=(watch-fanout --watchers "$FANOUT_WATCHERS" --streams "$FANOUT_STREAMS" --val-size "$VAL_SIZE" --timeout "$TIMEOUT")
r=$(measure "$r_eps" --conns 3 "${fan[@]}" --puts "$FANOUT_PUTS")
e=$(measure "$e_eps" --conns 3 "${fan[@]}" --puts "$FANOUT_PUTS")
label="watch, $FANOUT_WATCHERS watchers ($FANOUT_STREAMS streams x $per_stream), $FANOUT_PUTS puts back to back"
row "$label" events_per_sec "events/s" "$r" "$e"
row "$label" p99_ms "p99 ms" "$r" "$e"
r=$(measure "$r_eps" --conns 3 "${fan[@]}" --puts "$PACED_PUTS" --rate "$PACED_RATE")
e=$(measure "$e_eps" --conns 3 "${fan[@]}" --puts "$PACED_PUTS" --rate "$PACED_RATE")
label="watch, $FANOUT_WATCHERS watchers, $PACED_PUTS puts at $PACED_RATE/s"
row "$label" events_per_sec "events/s" "$r" "$e"
row "$label" p99_ms "p99 ms" "$r" "$e"
for c in $KA_CLIENTS; do
  conns=$(( c < 8 ? c : 8 ))
  ka=(--clients "$c" --conns "$conns" --total "$KA_TOTAL" lease-keepalive --leases "$KA_LEASES" --timeout "$TIMEOUT")
  r=$(measure "$r_eps" "${ka[@]}")
  e=$(measure "$e_eps" "${ka[@]}")
  label="lease keep-alive, $c clients, $KA_LEASES leases"
  row "$label" ops_per_sec "requests/s" "$r" "$e"
  row "$label" p99_ms "p99 ms" "$r" "$e"
done
