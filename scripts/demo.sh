#!/usr/bin/env bash
# Builds the cluster, starts the default local cluster from cluster.toml (three masters, two
# workers), runs a sample word count end to end, shows the result, and keeps the cluster
# running for the web UI until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace
rm -rf data/out
target/release/master up --config cluster.toml &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT INT TERM

HTTP=$(sed -n 's/^http *= *"\([^"]*\)".*/\1/p' cluster.toml | head -1)
for _ in $(seq 1 300); do
  if curl -sf "http://$HTTP/api/cluster" | grep -q '"alive":true.*"alive":true'; then break; fi
  sleep 0.1
done

echo "== submitting examples/specs/wordcount.json"
target/release/master submit --config cluster.toml examples/specs/wordcount.json --wait
echo "== the ten most frequent words"
cat data/out/wordcount/part-r-* | sort -t$'\t' -k2,2nr | head -10
echo "== web UI: http://$HTTP/  (Ctrl-C stops the cluster)"
if [ "${DEMO_EXIT:-0}" = "1" ]; then exit 0; fi
wait $UP
