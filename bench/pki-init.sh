#!/usr/bin/env bash
# Times `rampart pki init` for a 7-member cluster with 10 client certificates
# (18 certificates, every file fsynced), averaged over RUNS runs.
#   bash bench/pki-init.sh            # uses target/release/rampart (built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-50}"
TARGET="${CARGO_TARGET_DIR:-target}"
RAMPART="$TARGET/release/rampart"
[ -x "$RAMPART" ] || cargo build --release --bin rampart >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=()
for i in 0 1 2 3 4 5 6; do args+=(--member "m-$i"); done
for i in $(seq 0 9); do args+=(--client "c-$i"); done
start=$(date +%s%N)
for _ in $(seq 1 "$RUNS"); do
  rm -rf "$work/pki"
  "$RAMPART" pki init --dir "$work/pki" "${args[@]}" >/dev/null
done
end=$(date +%s%N)
echo "pki init, 7 members + 10 clients: $(( (end - start) / RUNS / 1000 )) us per run (avg of $RUNS)"
