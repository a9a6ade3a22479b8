#!/usr/bin/env bash
# Starts the local 3-member cluster of config/rampart-{0,1,2}.toml in the foreground: the PKI in
# .local/pki (created on first run), data in .local/data, logs in .local/log. Ctrl-C stops all
# three members cleanly. Used by `make run`; RAMPART names the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
RAMPART="${RAMPART:-target/release/rampart}"
PKI=.local/pki
mkdir -p .local/data .local/log

if [ ! -f "$PKI/ca.crt" ]; then
  "$RAMPART" pki init --dir "$PKI"
  echo
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping the cluster..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "Stopped. Data stays in .local/data; \`make clean-local\` removes it with the PKI."
}
trap stop INT TERM EXIT

for i in 0 1 2; do
  "$RAMPART" serve --config-file "config/rampart-$i.toml" >".local/log/rampart-$i.log" 2>&1 &
  pids+=($!)
done

endpoints=https://127.0.0.1:2379,https://127.0.0.1:3379,https://127.0.0.1:4379
for _ in $(seq 1 150); do
  if "$RAMPART" endpoint health --endpoints "$endpoints" --pki-dir "$PKI" >/dev/null 2>&1; then break; fi
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "A member exited; its log:" >&2
      tail -n 20 .local/log/rampart-*.log >&2
      exit 1
    fi
  done
  sleep 0.2
done

"$RAMPART" member list --endpoints "$endpoints" --pki-dir "$PKI" -w table
"$RAMPART" endpoint status --endpoints "$endpoints" --pki-dir "$PKI" -w table
cat <<TXT

The cluster runs: rampart-0 on https://127.0.0.1:2379, rampart-1 on :3379, rampart-2 on :4379
(peers on 2380/3380/4380, mutual TLS everywhere). Logs: .local/log/rampart-N.log.
From another terminal:

  $RAMPART kv put greeting hello --pki-dir $PKI --endpoints $endpoints
  $RAMPART kv get greeting --pki-dir $PKI --endpoints $endpoints
  ETCDCTL_API=3 etcdctl --endpoints $endpoints \\
      --cacert $PKI/ca.crt --cert $PKI/clients/root.crt --key $PKI/clients/root.key \\
      member list -w table

Ctrl-C stops it.
TXT
wait
