#!/usr/bin/env bash
# Checks a node's admin port with real tools, outside `cargo test`:
#   - promtool (Prometheus's own checker) lints /metrics;
#   - headless Chromium loads the status page, every roster member must be
#     in the rendered DOM with its state, and a phone-sized and a
#     desktop-sized screenshot are saved.
# Installs Debian's chromium and prometheus (for promtool) if missing.
# Usage: scripts/check-admin-page.sh [output directory, default target/admin-page]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/admin-page}
mkdir -p "$out"

if ! command -v chromium >/dev/null || ! command -v promtool >/dev/null || ! command -v curl >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium prometheus curl >/dev/null
fi

cargo build --release --quiet
demo_log="$out/demo.log"
profile=$(mktemp -d)
./target/release/fedsync demo --keep-running >"$demo_log" 2>&1 &
demo=$!
cleanup() {
    kill -INT "$demo" 2>/dev/null || true
    wait "$demo" 2>/dev/null || true
    rm -rf "$profile"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    grep -q "Press Ctrl-C" "$demo_log" && break
    kill -0 "$demo" 2>/dev/null || { cat "$demo_log"; echo "demo exited early" >&2; exit 1; }
    sleep 0.1
done
grep -q "Press Ctrl-C" "$demo_log" || { cat "$demo_log"; echo "demo did not come up" >&2; exit 1; }
url=$(grep "started hq" "$demo_log" | grep -o 'http://[^/]*/')
echo "hq's admin port: $url"

echo "== promtool check metrics"
curl -fsS "${url}metrics" >"$out/metrics.txt"
promtool check metrics <"$out/metrics.txt"
curl -fsS -H 'Accept: application/openmetrics-text; version=1.0.0' "${url}metrics" >"$out/metrics.om"
tail -n1 "$out/metrics.om" | grep -qx '# EOF'

echo "== headless Chromium"
# The flags keep Chromium off the network (this machine has none) and
# let it run as root in a container.
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$profile")
timeout 60 "${chrome[@]}" --dump-dom "$url" 2>/dev/null >"$out/page.html"
for row in 'member-hq" data-state="self' 'member-office-fr" data-state="in_sync' \
           'member-office-altai" data-state="in_sync' 'member-centre-aleysk" data-state="no_link' 'member-operator" data-state="operator'; do
    grep -q "id=\"$row\"" "$out/page.html" || { echo "missing in the page: $row" >&2; exit 1; }
done
timeout 60 "${chrome[@]}" --window-size=412,915 --screenshot="$out/status-phone.png" "$url" 2>/dev/null
timeout 60 "${chrome[@]}" --window-size=1280,800 --screenshot="$out/status-desktop.png" "$url" 2>/dev/null
for png in "$out/status-phone.png" "$out/status-desktop.png"; do
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || { echo "$png is not a PNG" >&2; exit 1; }
    [ "$(stat -c %s "$png")" -gt 5000 ] || { echo "$png is too small to show the page" >&2; exit 1; }
done
echo "== the /reports dashboard"
timeout 60 "${chrome[@]}" --dump-dom "${url}reports" 2>/dev/null >"$out/reports.html"
for part in 'id="chart-volunteers"' 'id="chart-rates"' 'id="cov-fr" data-status="included"' \
            'id="late-ru-altai/rubtsovsk" data-timeliness="pending"' 'signed by hq'; do
    grep -qF "$part" "$out/reports.html" || { echo "missing in /reports: $part" >&2; exit 1; }
done
grep -q '<rect' "$out/reports.html" || { echo "/reports drew no chart" >&2; exit 1; }
timeout 60 "${chrome[@]}" --window-size=412,915 --screenshot="$out/reports-phone.png" "${url}reports" 2>/dev/null
timeout 60 "${chrome[@]}" --window-size=1280,1000 --screenshot="$out/reports-desktop.png" "${url}reports" 2>/dev/null
for png in "$out/reports-phone.png" "$out/reports-desktop.png"; do
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || { echo "$png is not a PNG" >&2; exit 1; }
    [ "$(stat -c %s "$png")" -gt 5000 ] || { echo "$png is too small to show the page" >&2; exit 1; }
done
echo "admin page OK: $out/status-phone.png, $out/status-desktop.png, $out/reports-phone.png, $out/reports-desktop.png"
