#!/usr/bin/env bash
# `fjord produce` and `fjord consume` against kcat on the same release broker: N short lines (default
# 3,000,000 lines of 16 bytes) produced from a file and consumed back to a pipe, each tool RUNS times
# (alternating), median wall time and lines per second printed. Each tool runs as a user would run it:
# default flags, acks=all for both (librdkafka's default, which kcat keeps), output into `wc -l`, which
# also checks the count.
#
#   cargo build --release && bench/cli-vs-kcat.sh            # N=3000000 RUNS=3 by default
#   N=1000000 RUNS=5 bench/cli-vs-kcat.sh
set -euo pipefail

N=${N:-3000000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FJORD=${FJORD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord}
PORT=${PORT:-19392}
command -v kcat >/dev/null || { echo "kcat is missing (apt-get install kcat)" >&2; exit 1; }
[ -x "$FJORD" ] || { echo "$FJORD is missing: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fjord-cli-bench.XXXXXX)
BROKER_PID=
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

B=127.0.0.1:$PORT
"$FJORD" broker --override "listeners=PLAINTEXT://$B" --override "log.dirs=$WORK/data" \
  --override metrics.listener=127.0.0.1:0 >"$WORK/broker.out" 2>"$WORK/broker.log" &
BROKER_PID=$!
for _ in $(seq 100); do grep -q "fjord ready" "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q "fjord ready" "$WORK/broker.out" || { echo "broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1; }
export FJORD_BOOTSTRAP_SERVER=$B

# 16-byte lines: "message 0000001\n" ...
seq -f "message %07g" 1 "$N" >"$WORK/lines.txt"
echo "$(wc -l <"$WORK/lines.txt") lines of 16 bytes, $RUNS runs each, broker and tools on this machine ($(nproc) cores)"

now() { date +%s.%N; }
# Runs "$@" and prints its wall time in seconds.
timed() { local t0; t0=$(now); "$@"; echo "$(now) - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A T
run=0
for r in $(seq "$RUNS"); do
  for tool in kcat fjord; do
    run=$((run + 1))
    topic="produce-$tool-$r"
    "$FJORD" topics create "$topic" --partitions 1 >/dev/null 2>&1
    if [ "$tool" = kcat ]; then
      t=$(timed kcat -P -b "$B" -t "$topic" <"$WORK/lines.txt")
    else
      t=$(timed "$FJORD" produce "$topic" --input "$WORK/lines.txt")
    fi
    got=$("$FJORD" topics describe "$topic" --output json | grep -o '"high_offset": *[0-9]*' | grep -o '[0-9]*$')
    [ "$got" = "$N" ] || { echo "$tool produced $got of $N" >&2; exit 1; }
    T[produce-$tool]+="$t "
  done
  # Both tools read the same topic (written by kcat in this round).
  for tool in kcat fjord; do
    topic="produce-kcat-$r"
    if [ "$tool" = kcat ]; then
      t=$( { timed sh -c "kcat -C -b $B -t $topic -o beginning -e -q | wc -l >$WORK/count"; } )
    else
      t=$( { timed sh -c "\"$FJORD\" consume $topic --from-beginning --exit-at-end 2>/dev/null | wc -l >$WORK/count"; } )
    fi
    [ "$(cat "$WORK/count")" = "$N" ] || { echo "$tool consumed $(cat "$WORK/count") of $N" >&2; exit 1; }
    T[consume-$tool]+="$t "
  done
done

printf '%-8s %-6s %-28s %12s %14s\n' what tool "runs (s)" "median (s)" "lines/s"
for what in produce consume; do
  for tool in kcat fjord; do
    times=${T[$what-$tool]}
    m=$(echo "$times" | tr ' ' '\n' | grep . | median)
    printf '%-8s %-6s %-28s %12.2f %14.0f\n' "$what" "$tool" "$times" "$m" "$(echo "$N / $m" | bc -l)"
  done
done
