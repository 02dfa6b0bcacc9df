#!/usr/bin/env bash
# fault-run.sh: the real-process fault run. Three fedsync nodes (hq, office-fr,
# office-ke), each in its own network namespace behind a bridge, two of them
# with a skewed wall clock (libfaketime), take continuous writes through the
# operator CLI while nodes are kill -9'd and restarted, links are cut (both
# ways and one way) and packets are dropped with nftables. At the end the
# network is healed and every node must converge to identical data that holds
# every acknowledged write and no acknowledged delete. Exit 0 only then.
#
# Knobs (env): FEDSYNC_BIN (default target/release/fedsync), FAULT_SECS (240,
# seconds of writes + faults), FAULT_KILLS (60, kill -9s spread over the run),
# FAULT_NET_EVERY (4, change the network fault every N kills), FAULT_LOSS_PCT
# (25), FAULT_CONVERGE_SECS (120), FAULT_WRITE_PAUSE (0.2 s between a
# writer's commands), FAULT_DELETE_EVERY (7, a writer deletes one of its acked
# keys every N puts), FAULT_SKEW_FR (+5m), FAULT_SKEW_KE (-3m), FAULT_SEED,
# FAULT_KEEP=1 (keep the work dir and logs even when the run passes).
# Needs root (namespaces, nftables). Addresses: 198.18.0.0/24, inside the
# namespaces it creates only; nothing is routed out of them.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${FEDSYNC_BIN:-target/release/fedsync}")
SECS=${FAULT_SECS:-240}
KILLS=${FAULT_KILLS:-60}
NET_EVERY=${FAULT_NET_EVERY:-4}
LOSS=${FAULT_LOSS_PCT:-25}
CONVERGE=${FAULT_CONVERGE_SECS:-120}
PAUSE=${FAULT_WRITE_PAUSE:-0.2}
DEL_EVERY=${FAULT_DELETE_EVERY:-7}
SEED=${FAULT_SEED:-$$}
RANDOM=$SEED

NAMES=(hq office-fr office-ke)
REGIONS=("" fr ke)
SKEWS=("+0" "${FAULT_SKEW_FR:-+5m}" "${FAULT_SKEW_KE:--3m}")
PREFIXES=(hq/faults regions/fr/faults regions/ke/faults)
IPS=(198.18.0.1 198.18.0.2 198.18.0.3)
PORT=7100
RUN="fsim-$$"          # unique per run: a crashed earlier run never collides
NS_BR="$RUN-br"
NS=("$RUN-0" "$RUN-1" "$RUN-2")
PIDS=(0 0 0)           # pid of each node process (0: not running)
KILLED=(0 0 0)
PARTS=0 ONEWAY=0 LOSSES=0
WRITERS=()
STARTED=()             # every node pid, for libfaketime's leftovers in /dev/shm
T0=$(date +%s)

say() { printf '[fault-run %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { say "FAIL: $*"; exit 1; }
[[ -x "$BIN" ]] || die "no fedsync binary at $BIN (build it or set FEDSYNC_BIN)"
[[ $EUID -eq 0 ]] || die "needs root (network namespaces, nftables)"

# Debian packages, installed only if a tool is missing.
need=()
for t in ip:iproute2 nft:nftables faketime:faketime jq:jq timeout:coreutils; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

LIBFT=$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$' || true); LIBFT=${LIBFT%%$'\n'*}
[[ -f $LIBFT ]] || die "libfaketime.so.1 not found (package libfaketime)"
DIR=$(mktemp -d /tmp/fault-run.XXXXXX)
LOGS="$DIR/logs"; mkdir -p "$LOGS"
OK=0

cleanup() {
  local rc=$? t p pids
  trap - EXIT INT TERM
  set +e
  disown -a   # no job notices for what we kill below
  for w in "${WRITERS[@]}"; do kill "$w" 2>/dev/null; done
  for p in "${PIDS[@]}"; do ((p)) && kill -9 "$p" 2>/dev/null; done
  # Every process we started lives in one of our namespaces (nodes, clients).
  for t in $(seq 50); do
    pids=$(for ns in "${NS[@]}" "$NS_BR"; do ip netns pids "$ns" 2>/dev/null; done)
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086 # a list of pids
    kill -9 $pids 2>/dev/null; sleep 0.1
  done
  # Deleting a namespace removes its veth end, and so the pair; the bridge
  # goes with the bridge namespace.
  for ns in "${NS[@]}" "$NS_BR"; do ip netns del "$ns" 2>/dev/null; done
  # libfaketime gives each process a shm segment and a semaphore named by its
  # pid, removed at a normal exit only: ours die by kill -9.
  for p in "${STARTED[@]}"; do rm -f "/dev/shm/faketime_shm_$p" "/dev/shm/sem.faketime_sem_$p"; done
  if ((OK)) && [[ ${FAULT_KEEP:-0} != 1 ]]; then rm -rf "$DIR"; else say "logs and data kept in $DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# --- the network: a bridge namespace and one namespace per node ------------
setup_net() {
  ip netns add "$NS_BR"
  ip -n "$NS_BR" link add br0 type bridge
  ip -n "$NS_BR" link set br0 up
  for i in 0 1 2; do
    ip netns add "${NS[i]}"
    ip -n "$NS_BR" link add "v$i" type veth peer name eth0 netns "${NS[i]}"
    ip -n "$NS_BR" link set "v$i" master br0 up
    ip -n "${NS[i]}" addr add "${IPS[i]}/24" dev eth0
    ip -n "${NS[i]}" link set eth0 up
    ip -n "${NS[i]}" link set lo up
    # An empty filter table whose chains get the fault rules; eth0 only, so
    # the local operator client (same namespace) is never cut off.
    ip netns exec "${NS[i]}" nft -f - <<'EOF'
table inet fault {
  chain in { type filter hook input priority 0; policy accept; }
  chain out { type filter hook output priority 0; policy accept; }
}
EOF
  done
}
nft_in() { ip netns exec "${NS[$1]}" nft "${@:2}"; }
heal() { for i in 0 1 2; do nft_in "$i" flush table inet fault; done; }
cut_link() {  # cut_link A B [oneway]: drop A's packets to B (and B's to A unless oneway)
  nft_in "$1" add rule inet fault out oifname eth0 ip daddr "${IPS[$2]}" drop
  [[ ${3:-} == oneway ]] || nft_in "$1" add rule inet fault in iifname eth0 ip saddr "${IPS[$2]}" drop
}
lossy() { nft_in "$1" add rule inet fault in iifname eth0 numgen random mod 100 '<' "$LOSS" drop; }

# --- the federation, built with the binary's own commands -----------------
setup_federation() {
  local f="$DIR/fed" fed i peers
  mkdir -p "$f"
  fed=$("$BIN" federation create --dir "$f" --json | jq -r .federation)
  for i in 0 1 2; do
    "$BIN" node init --dir "$f/${NAMES[i]}/keys" --name "${NAMES[i]}" --json >/dev/null
    if ((i == 0)); then set -- --role hq; else set -- --role region --region "${REGIONS[i]}"; fi
    "$BIN" roster add --roster "$f/roster.bin" --federation-key "$f/federation.key" \
      --from "$f/${NAMES[i]}/keys" --name "${NAMES[i]}" "$@" --address "${IPS[i]}:$PORT" >/dev/null
  done
  "$BIN" operator init --dir "$f/op" --name fault-op --connect "${IPS[0]}:$PORT" \
    --federation "$fed" --roster "$f/roster.bin" --json >/dev/null
  "$BIN" roster add --roster "$f/roster.bin" --federation-key "$f/federation.key" \
    --from "$f/op" --name fault-op --role operator >/dev/null
  export FEDSYNC_CLIENT="$f/op/client.toml"
  # Hub and spoke (offices dial hq) plus one office-office link (fr dials ke).
  for i in 0 1 2; do
    peers=""
    ((i > 0)) && peers+=$'\n[[peers]]\nname = "hq"\naddress = "'"${IPS[0]}:$PORT"$'"\n'
    ((i == 1)) && peers+=$'\n[[peers]]\nname = "office-ke"\naddress = "'"${IPS[2]}:$PORT"$'"\n'
    cp "$f/roster.bin" "$f/${NAMES[i]}/roster.bin"
    # Short reconnect/anti-entropy so that a few minutes of faults fit; the
    # admin port binds the namespace's own loopback.
    cat >"$f/${NAMES[i]}/node.toml" <<EOF
name = "${NAMES[i]}"
data_dir = "data"
listen = "${IPS[i]}:$PORT"
[identity]
node_key = "keys/node.key"
tls_cert = "keys/tls.crt"
tls_key = "keys/tls.key"
[federation]
key = "$fed"
roster = "roster.bin"
$peers
[sync]
anti_entropy_secs = 10
reconnect_max_ms = 4000
connect_timeout_secs = 5
keepalive_secs = 5
keepalive_timeout_secs = 10
[admin]
listen = "127.0.0.1:7180"
[log]
filter = "info"
EOF
  done
}

# --- nodes and the operator client -----------------------------------------
# client I CMD... ARGS...: the CLI inside node I's namespace, against node I.
client() {
  timeout 20 ip netns exec "${NS[$1]}" "$BIN" "${@:2}" --connect "${IPS[$1]}:$PORT"
}
# Skewed clocks: libfaketime preloaded into the node itself. Not through the
# `faketime` wrapper: it forks, so kill -9 would hit the wrapper, not the node.
# `exec`, so call it in a subshell: `( skewed … ) &` leaves $! = the node.
skewed() {  # skewed I CMD...: CMD in node I's namespace with node I's clock
  exec ip netns exec "${NS[$1]}" env LD_PRELOAD="$LIBFT" FAKETIME="${SKEWS[$1]}" \
    FAKETIME_DONT_FAKE_MONOTONIC=1 "${@:2}"
}
start_node() {
  local i=$1
  echo "=== start $(date -u +%FT%T.%3NZ)" >>"$LOGS/${NAMES[i]}.log"
  (skewed "$i" "$BIN" run --config "$DIR/fed/${NAMES[i]}/node.toml") >>"$LOGS/${NAMES[i]}.log" 2>&1 &
  PIDS[i]=$!; STARTED+=("$!")   # ip netns exec and env both exec: this is the node
}
kill_node() {
  local i=$1
  # A node that is gone before we kill it died by itself: a product bug.
  kill -0 "${PIDS[i]}" 2>/dev/null || die "${NAMES[i]} exited on its own: $(tail -5 "$LOGS/${NAMES[i]}.log")"
  kill -9 "${PIDS[i]}"
  { wait "${PIDS[i]}"; } 2>/dev/null || true
  echo "=== kill -9 $(date -u +%FT%T.%3NZ)" >>"$LOGS/${NAMES[i]}.log"
  PIDS[i]=0; KILLED[i]=$((KILLED[i] + 1))
}
wait_ready() {
  local i=$1 t
  for t in $(seq 60); do
    client "$i" status --json >/dev/null 2>&1 && return 0
    kill -0 "${PIDS[i]}" 2>/dev/null || die "${NAMES[i]} exited (see $LOGS/${NAMES[i]}.log)"
    sleep 0.5
  done
  die "${NAMES[i]} not serving after 30 s"
}

# The skew must reach the Rust binary, not just `date`: a node's first write,
# before it has observed any remote timestamp, carries its own wall clock.
check_skew() {
  local i key now hlc
  for i in 2 0 1; do   # slowest clock first, so nobody has seen a later one
    key="${PREFIXES[i]}/clock-probe"
    printf '%s\tprobe\n' "$key" >>"$DIR/attempted"
    now=$(date +%s%3N)
    client "$i" put "$key" probe >/dev/null || die "probe write at ${NAMES[i]} failed"
    printf '%s\tprobe\n' "$key" >>"$DIR/acked"
    hlc=$(client "$i" get "$key" --json | jq -r .hlc_wall_ms)
    say "clock ${NAMES[i]}: faketime ${SKEWS[i]}, date in ns: $(skewed "$i" date -u +%T)," \
      "node's HLC wall - real = $(((hlc - now) / 1000)) s"
  done
}

# writer I: puts unique keys in node I's own key space; a line goes to
# `acked` only if the command exited 0. Every DEL_EVERY puts it deletes one of
# its acked keys. Attempts are logged before they are made.
writer() {
  local i=$1 end=$2 n=0 j key val del acked=()
  while (($(date +%s) < end)); do
    n=$((n + 1)); key="${PREFIXES[i]}/$n"; val="{\"by\":\"${NAMES[i]}\",\"n\":$n,\"r\":$RANDOM}"
    printf '%s\t%s\n' "$key" "$val" >>"$DIR/attempted"
    if client "$i" put "$key" "$val" >/dev/null 2>>"$LOGS/writer-$i.err"; then
      printf '%s\t%s\n' "$key" "$val" >>"$DIR/acked"; acked+=("$key")
    fi
    if ((n % DEL_EVERY == 0 && ${#acked[@]} > 1)); then
      j=$((RANDOM % ${#acked[@]})); del=${acked[j]}
      unset 'acked[j]'; acked=("${acked[@]}")   # never delete one key twice
      echo "$del" >>"$DIR/del-attempted"
      client "$i" delete "$del" >/dev/null 2>>"$LOGS/writer-$i.err" && echo "$del" >>"$DIR/del-acked"
    fi
    sleep "$PAUSE"
  done
}

# --- faults -------------------------------------------------------------
net_fault() {
  local a=$((RANDOM % 3)) b
  b=$(((a + 1 + RANDOM % 2) % 3))
  heal
  case $((RANDOM % 5)) in
    0) say "net: healed" ;;
    1) cut_link "$a" "$b"; PARTS=$((PARTS + 1)); say "net: ${NAMES[a]} <-/-> ${NAMES[b]}" ;;
    2) cut_link "$a" "$b" oneway; ONEWAY=$((ONEWAY + 1)); say "net: ${NAMES[a]} -/-> ${NAMES[b]} (one way)" ;;
    3) cut_link "$a" "$b"; cut_link "$a" $((3 - a - b)); PARTS=$((PARTS + 1)); say "net: ${NAMES[a]} isolated" ;;
    4) lossy "$a"; LOSSES=$((LOSSES + 1)); say "net: ${LOSS}% loss into ${NAMES[a]}" ;;
  esac
}
fault_loop() {  # kill k happens at a random point of slot k, so KILLS fit in SECS
  local start k=0 i slot now at
  start=$(date +%s%3N); slot=$((SECS * 1000 / KILLS))
  while ((k < KILLS)); do
    ((k % NET_EVERY != 0)) || net_fault
    at=$((start + k * slot + RANDOM % (slot / 2 + 1))); now=$(date +%s%3N)
    ((at <= now)) || sleep "$(printf '%d.%03d' $(((at - now) / 1000)) $(((at - now) % 1000)))"
    i=$((RANDOM % 3)); kill_node "$i"; k=$((k + 1))
    sleep "$(printf '%d.%03d' $((RANDOM % 2)) $((RANDOM % 1000)))"   # down 0-2 s
    start_node "$i"
  done
  now=$(date +%s)
  ((now >= $1)) || sleep $(($1 - now))   # let the writers finish their time
}

# --- the end: converge, then check ----------------------------------------
snapshot() {  # node I's whole store as sorted JSON lines
  client "$1" list "" --json --limit 100000000 | jq -c '.[]' | LC_ALL=C sort
}
converge() {  # equal frontier digests first, then equal listings
  local t0 i d digests n
  t0=$(date +%s)
  while (($(date +%s) - t0 < CONVERGE)); do
    digests=""
    for i in 0 1 2; do
      d=$(client "$i" frontier --json 2>/dev/null | jq -r '.digest // empty' || true)
      digests+="${d:-unreachable-$i} "
    done
    n=$(tr ' ' '\n' <<<"$digests" | sed '/^$/d' | sort -u | wc -l)
    if ((n == 1)) && snapshot 0 >"$DIR/final-0.jsonl" && snapshot 1 >"$DIR/final-1.jsonl" &&
      snapshot 2 >"$DIR/final-2.jsonl" && cmp -s "$DIR/final-0.jsonl" "$DIR/final-1.jsonl" &&
      cmp -s "$DIR/final-0.jsonl" "$DIR/final-2.jsonl"; then
      CONV=$(($(date +%s) - HEALED)); return 0
    fi
    sleep 2
  done
  for i in 0 1 2; do say "${NAMES[i]}: $(client "$i" frontier --json 2>&1 | tr -d '\n ' | head -c 800)"; done
  die "nodes did not converge within ${CONVERGE}s (digests: $digests)"
}
verify() {
  local i q bad=0 s="$DIR/sets"
  mkdir -p "$s"
  LC_ALL=C sort -u "$DIR/attempted" >"$s/attempted"
  LC_ALL=C sort -u "$DIR/del-attempted" >"$s/del-attempted"
  LC_ALL=C sort -u "$DIR/del-acked" >"$s/del-acked"
  # Acked puts whose key no delete was ever attempted on must be present.
  awk -F'\t' 'NR==FNR{d[$1]=1; next} !($1 in d)' "$s/del-attempted" "$DIR/acked" | LC_ALL=C sort -u >"$s/must"
  for i in 0 1 2; do
    jq -r '[.key, .value] | @tsv' "$DIR/final-$i.jsonl" | LC_ALL=C sort >"$s/held-$i"
    cut -f1 "$s/held-$i" >"$s/keys-$i"
    LC_ALL=C comm -23 "$s/must" "$s/held-$i" >"$s/lost-$i"
    LC_ALL=C comm -12 "$s/del-acked" "$s/keys-$i" >"$s/undeleted-$i"
    LC_ALL=C comm -23 "$s/held-$i" "$s/attempted" >"$s/unknown-$i"
    for c in lost undeleted unknown; do
      if [[ -s "$s/$c-$i" ]]; then
        bad=1; say "${NAMES[i]}: $(wc -l <"$s/$c-$i") $c, e.g.: $(head -3 "$s/$c-$i" | tr '\n\t' '; ')"
      fi
    done
  done
  # Nothing honest was written, so nothing may have been refused (an
  # equivocation here would mean a node reused a seq after a kill -9).
  for i in 0 1 2; do
    q=$(client "$i" quarantine list --json --limit 5) || die "quarantine list at ${NAMES[i]} failed"
    if (($(jq '.kept + .dropped' <<<"$q") > 0)); then
      bad=1; say "${NAMES[i]}: refused deltas: $(jq -c '[.kept, (.entries | map({code, reason, origin, seq, key}))]' <<<"$q")"
    fi
  done
  ((bad == 0)) || die "checks failed (lost: acked put missing; undeleted: acked delete present; unknown: never written). Sets in $s"
}

main() {
  : >"$DIR/attempted"; : >"$DIR/acked"; : >"$DIR/del-attempted"; : >"$DIR/del-acked"
  say "run $RUN, seed $SEED, binary $BIN, work dir $DIR"
  setup_net
  setup_federation
  for i in 0 1 2; do start_node "$i"; done
  for i in 0 1 2; do wait_ready "$i"; done
  check_skew
  local end=$(($(date +%s) + SECS)) i tfault
  for i in 0 1 2; do writer "$i" "$end" & WRITERS+=($!); done
  say "writers and faults for ${SECS}s: $KILLS kills, network change every $NET_EVERY kills"
  fault_loop "$end"
  for w in "${WRITERS[@]}"; do wait "$w" || true; done
  WRITERS=()
  heal; HEALED=$(date +%s)
  for i in 0 1 2; do ((PIDS[i])) || start_node "$i"; done
  for i in 0 1 2; do wait_ready "$i"; done
  tfault=$(($(date +%s) - T0))
  say "healed, all nodes up; waiting for convergence (up to ${CONVERGE}s)"
  converge
  verify
  ! grep -n -m3 'panicked' "$LOGS"/*.log || die "a node panicked (above)"
  OK=1
  say "PASS: kills ${KILLED[*]} (hq fr ke) = $((KILLED[0] + KILLED[1] + KILLED[2])), cuts $PARTS, one-way $ONEWAY, loss $LOSSES;" \
    "puts attempted $(grep -vc probe "$DIR/attempted"), acked $(grep -vc probe "$DIR/acked");" \
    "deletes attempted $(wc -l <"$DIR/del-attempted"), acked $(wc -l <"$DIR/del-acked");" \
    "records held $(wc -l <"$DIR/final-0.jsonl") on every node; identical ${CONV}s after the heal;" \
    "faults phase ended at ${tfault}s, total $(($(date +%s) - T0))s"
}
main "$@"
