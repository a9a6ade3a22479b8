# Sourced by the benchmark scripts: builds rampart, makes a PKI in a temporary directory and
# starts a 3-member rampart cluster and a 3-member etcd cluster side by side with the same
# mutual-TLS setup, on loopback ports BASE..BASE+11 (rampart: client BASE+2i, peer BASE+2i+1;
# etcd: client BASE+6+2i, peer BASE+7+2i). Sets RAMPART, P (the PKI), work, pids, r_eps and
# e_eps; an EXIT trap stops only the processes started here and removes the directory.
#
#   source bench/lib/two-clusters.sh; start_two_clusters 23800

TARGET="${CARGO_TARGET_DIR:-target}"
RAMPART="$TARGET/release/rampart"

wait_ready() { # endpoints
  for _ in $(seq 1 150); do
    if "$RAMPART" endpoint health --endpoints "$1" --pki-dir "$P" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "cluster at $1 did not become healthy" >&2; return 1
}

start_two_clusters() { # base port
  local base=$1 i rc rp ec ep M r_initial="" e_initial=""
  cargo build --release --bin rampart >/dev/null 2>&1 || cargo build --release --bin rampart
  command -v etcd >/dev/null || { echo "etcd is not installed: run make deps" >&2; exit 1; }
  work="$(mktemp -d)"
  pids=()
  trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
  "$RAMPART" pki init --dir "$work/pki" >/dev/null
  P="$work/pki"
  for i in 0 1 2; do
    r_initial+="${r_initial:+,}rampart-$i=https://127.0.0.1:$((base + 1 + 2 * i))"
    e_initial+="${e_initial:+,}rampart-$i=https://127.0.0.1:$((base + 7 + 2 * i))"
  done
  r_eps="" e_eps=""
  for i in 0 1 2; do
    rc=$((base + 2 * i)); rp=$((rc + 1)); ec=$((base + 6 + 2 * i)); ep=$((ec + 1))
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
}
