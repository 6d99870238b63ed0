# Shared by the Connect benchmarks (sourced, not run): a broker and a standalone Connect worker from $FJORD in
# $WORK, and the CPU seconds of a process. Sets B (bootstrap), BROKER_PID, REST (the worker's REST address) and
# WORKER_PID, and exports FJORD_BOOTSTRAP_SERVER.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_broker() {
  B=127.0.0.1:$(free_port)
  "$FJORD" broker --override "listeners=PLAINTEXT://$B" --override "log.dirs=$WORK/data" \
    --override metrics.listener=127.0.0.1:0 >"$WORK/broker.out" 2>"$WORK/broker.log" &
  BROKER_PID=$!
  for _ in $(seq 300); do grep -q "fjord ready" "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "fjord ready" "$WORK/broker.out" || { echo "broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1; }
  export FJORD_BOOTSTRAP_SERVER=$B
}

start_worker() {
  cat >"$WORK/worker.properties" <<END
bootstrap.servers=$B
offset.storage.file.filename=$WORK/connect.offsets
listeners=http://127.0.0.1:0
END
  "$FJORD" connect standalone "$WORK/worker.properties" >"$WORK/worker.out" 2>"$WORK/worker.log" &
  WORKER_PID=$!
  for _ in $(seq 300); do grep -q "fjord connect ready" "$WORK/worker.out" 2>/dev/null && break; sleep 0.1; done
  REST=$(grep -o 'rest=[^ ]*' "$WORK/worker.out" | head -1 | cut -d= -f2)
  [ -n "$REST" ] || { echo "worker did not start" >&2; cat "$WORK/worker.log" >&2; exit 1; }
}

now() { date +%s.%N; }

# CPU seconds (user + system) used so far by a process and its children that are still running.
cpu() { # $1: pid
  local t=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
