#!/usr/bin/env bash
# Broker CPU and peak RSS of two release builds, A/B, alternating: the same `fjord bench produce` client
# (acks=all, 3,000,000 x 100 B and 600,000 x 1 KiB) against a broker started from each binary in turn.
# Made to compare allocators (README, "Memory allocator"):
#
#   cargo build --release && cp target/release/fjord /tmp/fjord-jemalloc
#   cargo build --release --no-default-features --features registry,connect,dashboard,sql \
#     && cp target/release/fjord /tmp/fjord-glibc
#   A=/tmp/fjord-glibc B=/tmp/fjord-jemalloc ROUNDS=3 bench/alloc-ab.sh
set -u
A=${A:?the first broker binary}
B=${B:?the second broker binary}
CLIENT=${CLIENT:-$A}
ROUNDS=${ROUNDS:-3}
for r in $(seq "$ROUNDS"); do
  for BIN in "$A" "$B"; do
    W=$(mktemp -d /tmp/fjord-alloc-ab.XXXXXX)
    PORT=$((19500 + RANDOM % 400))
    "$BIN" broker --override "listeners=PLAINTEXT://127.0.0.1:$PORT" --override "log.dirs=$W/d" \
      --override metrics.listener=127.0.0.1:0 >"$W/out" 2>"$W/log" &
    P=$!
    for _ in $(seq 100); do grep -q "fjord ready" "$W/out" 2>/dev/null && break; sleep 0.1; done
    grep -q "fjord ready" "$W/out" || { echo "$BIN did not start" >&2; cat "$W/log" >&2; exit 1; }
    for load in "100 3000000" "1024 600000"; do
      set -- $load
      c0=$(awk '{print $14+$15}' "/proc/$P/stat")
      out=$(FJORD_BOOTSTRAP_SERVER=127.0.0.1:$PORT "$CLIENT" bench produce --topic "t$1" --messages "$2" \
        --size "$1" --acks all 2>&1 | grep -m1 "msgs/s")
      c1=$(awk '{print $14+$15}' "/proc/$P/stat")
      echo "round $r $BIN size=$1 n=$2 broker_cpu_s=$(echo "scale=2; ($c1-$c0)/$(getconf CLK_TCK)" | bc) | $out"
    done
    echo "round $r $BIN peak_rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$P/status")"
    kill "$P"; wait "$P" 2>/dev/null; rm -rf "$W"
  done
done
