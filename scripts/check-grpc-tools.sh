#!/usr/bin/env bash
# Checks a node with a standard gRPC client, outside `cargo test`: Python's
# grpcio and grpcio-reflection (reflection v1alpha, as grpcurl 1.8 speaks)
# list the services, call Status from the descriptors the node serves, and
# ask the health service, with the operator's PEM files (see
# scripts/check-grpc-tools.py). Installs the Python packages in a venv
# under target/ if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/grpc-tools-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import grpc, grpc_reflection, grpc_health' 2>/dev/null ||
    "$venv/bin/pip" install --quiet grpcio grpcio-reflection grpcio-health-checking

cargo build --release --quiet
log=$(mktemp)
./target/release/fedsync demo --keep-running >"$log" 2>&1 &
demo=$!
cleanup() {
    kill -INT "$demo" 2>/dev/null || true
    wait "$demo" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    grep -q "Press Ctrl-C" "$log" && break
    kill -0 "$demo" 2>/dev/null || { cat "$log"; echo "demo exited early" >&2; exit 1; }
    sleep 0.1
done
grep -q "Press Ctrl-C" "$log" || { cat "$log"; echo "demo did not come up" >&2; exit 1; }
fed=$(sed -n 's/^federation directory: //p' "$log")
addr=$(grep "started hq " "$log" | grep -o 'on [0-9.]*:[0-9]*' | cut -d' ' -f2)
echo "hq at $addr, federation in $fed"
"$venv/bin/python" scripts/check-grpc-tools.py "$addr" "$fed"
