#!/usr/bin/env bash
# The FileStreamSource's throughput (issue #14's target: 200,000 lines/s into a topic): a broker and a standalone
# Connect worker; a file of N lines (LINE bytes each) is written, then a FileStreamSource connector is created and
# timed until the topic's end offset reaches N (kcat -Q, every 100 ms). Prints lines/s from the first line in the
# topic to the last (the connector's start not counted) and with the start, and the CPU seconds of the worker and
# the broker. Values go through StringConverter (the line as it is; the default JsonConverter would wrap each line
# in a schema envelope). KEEP=1 keeps the temporary directory. Every line is then read back with kcat and compared with the file.
#
#   cargo build --release -p fjord && bench/connect-file.sh          # N=2000000 LINE=100
#   FJORD=$CARGO_TARGET_DIR/debug/fjord N=100000 bench/connect-file.sh
set -euo pipefail

N=${N:-2000000}
LINE=${LINE:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FJORD=${FJORD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord}
[ -x "$FJORD" ] || { echo "$FJORD is missing: cargo build --release -p fjord (or set FJORD=)" >&2; exit 1; }
command -v kcat >/dev/null || { echo "kcat is missing: apt-get install kcat" >&2; exit 1; }
[ "$LINE" -ge 10 ] || { echo "LINE must be at least 10 (a line holds its number)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fjord-file-bench.XXXXXX)
BROKER_PID= WORKER_PID=
cleanup() {
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib-connect.sh"

start_broker
"$FJORD" topics create lines --partitions 1 >/dev/null

# Line i: its number, padded with x to LINE bytes (newline not counted).
awk -v n="$N" -v len="$LINE" 'BEGIN { pad = sprintf("%" len "s", ""); gsub(/ /, "x", pad)
  for (i = 0; i < n; i++) { s = i ""; print s substr(pad, 1, len - length(s)) } }' >"$WORK/in.txt"

start_worker

end_offset() { kcat -b "$B" -Q -t lines:0:-1 2>/dev/null | awk '{print $NF}' | grep -E '^[0-9]+$' || echo 0; }

w0=$(cpu "$WORKER_PID"); b0=$(cpu "$BROKER_PID")
started=$(now)
curl -sf -X PUT -H 'Content-Type: application/json' "http://$REST/connectors/src/config" --data @- >/dev/null <<END
{"connector.class":"FileStreamSource","file":"$WORK/in.txt","topic":"lines",
 "value.converter":"org.apache.kafka.connect.storage.StringConverter"}
END
first="" c0=0 c=0
for _ in $(seq 6000); do
  c=$(end_offset)
  if [ -z "$first" ] && [ "$c" -gt 0 ]; then first=$(now); c0=$c; fi
  [ "$c" -ge "$N" ] && break
  sleep 0.1
done
end=$(now)
w1=$(cpu "$WORKER_PID"); b1=$(cpu "$BROKER_PID")
[ "$c" -ge "$N" ] || { echo "only $c of $N lines reached the topic" >&2; tail -20 "$WORK/worker.log" >&2; exit 1; }
echo "FileStreamSource, $N lines of $LINE bytes, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v n="$N" -v c0="$c0" -v s="$started" -v f="$first" -v e="$end" 'BEGIN {
  printf "%.0f lines/s (%d lines in %.2f s after the first); %.0f lines/s with the connector start\n",
    (n - c0) / (e - f), n - c0, e - f, n / (e - s) }'
awk -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b-a}')" -v b="$(awk -v a="$b0" -v b="$b1" 'BEGIN{print b-a}')" -v n="$N" \
  'BEGIN { printf "CPU seconds: worker %.2f, broker %.2f (%.2f us of CPU per line in all)\n", w, b, (w + b) * 1e6 / n }'
# Every line arrived once, in order.
kcat -b "$B" -C -t lines -o beginning -e -q >"$WORK/out.txt"
cmp -s "$WORK/in.txt" "$WORK/out.txt" || { echo "the topic's lines differ from the file" >&2; exit 1; }
echo "the topic holds the file's $N lines in order"
