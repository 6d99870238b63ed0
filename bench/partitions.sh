#!/usr/bin/env bash
# Many-partitions benchmark (issue #9): one broker, PARTITIONS partitions spread over TOPICS topics.
#
# Measures, with the release binary:
#   1. wall clock of the `fjord topics create` commands;
#   2. the broker's RSS (/proc/PID/status VmRSS) and open fds (/proc/PID/fd), idle after creation;
#   3. a clean restart (SIGTERM): time from exec to `fjord topics list` answering, then RSS and fds;
#   4. an unclean restart (kill -9, then start), timed the same way;
#   5. `fjord bench produce` / `fjord bench consume` against the first (largest) topic, records spread over its
#      partitions, then RSS/fds under that load and an unclean restart with that data on disk.
# Prints a markdown table, the machine and the date.
#
# Usage: bench/partitions.sh                     # 10,000 partitions over 10 topics
#        PARTITIONS=1000 bench/partitions.sh
# Environment (all optional):
#   PARTITIONS (10000), TOPICS (10)
#   BENCH_MESSAGES (1000000), BENCH_SIZE (100): produce/consume size; BENCH_MESSAGES=0 skips step 5
#   NOFILE: soft fd limit to ask for (default: raise the soft limit to the hard limit; a value above the hard
#           limit needs root)
#   FJORD: binary (default target/release/fjord, or $CARGO_TARGET_DIR/release/fjord)
#   CREATE_TIMEOUT (900 s for all creates together), START_TIMEOUT (300 s per start), IDLE_SECONDS (5)
#   KEEP_DATA=1: keep the temporary data directory and logs
set -euo pipefail

PARTITIONS=${PARTITIONS:-10000}
TOPICS=${TOPICS:-10}
BENCH_MESSAGES=${BENCH_MESSAGES:-1000000}
BENCH_SIZE=${BENCH_SIZE:-100}
CREATE_TIMEOUT=${CREATE_TIMEOUT:-900}
START_TIMEOUT=${START_TIMEOUT:-300}
STOP_TIMEOUT=${STOP_TIMEOUT:-120}
IDLE_SECONDS=${IDLE_SECONDS:-5}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${FJORD:-}" ]]; then
  FJORD="${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord"
  [[ -x "$FJORD" ]] || FJORD="$ROOT/target/release/fjord"
fi

die() { echo "partitions.sh: $*" >&2; exit 2; }
[[ -x "$FJORD" ]] || die "no release binary at $FJORD: run 'cargo build --release -p fjord' first"
[[ "$PARTITIONS" =~ ^[0-9]+$ && "$PARTITIONS" -ge 1 ]] || die "PARTITIONS must be a positive integer"
[[ "$TOPICS" =~ ^[0-9]+$ && "$TOPICS" -ge 1 && "$TOPICS" -le "$PARTITIONS" ]] || die "TOPICS must be 1..PARTITIONS"
command -v python3 >/dev/null || die "python3 is needed (free ports, JSON)"
command -v curl >/dev/null || die "curl is needed (/metrics)"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fmt_int() { printf "%'d" "$1" 2>/dev/null || printf "%d" "$1"; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# ---- file descriptors ------------------------------------------------------------------------------------
FD_SOFT_BEFORE=$(ulimit -Sn)
FD_HARD=$(ulimit -Hn)
if [[ -n "${NOFILE:-}" ]]; then
  if [[ "$NOFILE" -gt "$FD_HARD" && "$FD_HARD" != unlimited ]]; then
    ulimit -Hn "$NOFILE" 2>/dev/null || log "cannot raise the hard fd limit to $NOFILE (not permitted: needs root with CAP_SYS_RESOURCE)"
  fi
  ulimit -Sn "$NOFILE" 2>/dev/null || log "cannot set the soft fd limit to $NOFILE"
else
  ulimit -Sn "$FD_HARD" 2>/dev/null || true
fi
FD_LIMIT=$(ulimit -Sn)
log "open-file limit (ulimit -n): was $FD_SOFT_BEFORE (hard $FD_HARD), now $FD_LIMIT"

# ---- temp dir, ports, cleanup ----------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fjord-partitions.XXXXXX")
DATA="$WORK/data"
mkdir -p "$DATA"
PORT=$(free_port)
MPORT=$(free_port)
while [[ "$MPORT" == "$PORT" ]]; do MPORT=$(free_port); done
export FJORD_BOOTSTRAP_SERVER="127.0.0.1:$PORT"
BROKER_PID=""
START_N=0

cleanup() {
  local rc=$?
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  if [[ "${KEEP_DATA:-0}" == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- results ---------------------------------------------------------------------------------------------
declare -A R   # measurement name -> value
FAILED=""      # first failure, explained

broker_log_tail() {
  local f="$WORK/broker-$START_N.err"
  [[ -f "$f" ]] || return 0
  echo "---- last lines of the broker's log ($f) ----" >&2
  tail -n 15 "$f" >&2 || true
  local emfile
  emfile=$(grep -c -i 'too many open files\|os error 24' "$f" 2>/dev/null || true)
  if [[ "${emfile:-0}" -gt 0 ]]; then
    echo "the broker's log mentions 'Too many open files' $emfile time(s): the fd limit ($FD_LIMIT) is too low" >&2
  fi
}

fail() { # fail STEP MESSAGE: record the first failure, print the broker's side, and skip to the report
  FAILED="$1: $2"
  log "FAILED at $FAILED"
  if [[ -n "$BROKER_PID" ]]; then
    if kill -0 "$BROKER_PID" 2>/dev/null; then
      log "broker pid $BROKER_PID still running: $(fds) fds open (limit $FD_LIMIT), RSS $(rss_mib) MiB"
    else
      log "broker pid $BROKER_PID is gone"
    fi
  fi
  broker_log_tail
  report
  exit 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0; }
rss_mib() { awk -v k="$(rss_kib)" 'BEGIN { printf "%.0f", k / 1024 }'; }
cpu_s() { # user+system CPU seconds the broker has used so far
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$BROKER_PID/stat" 2>/dev/null || echo "?"
}
fds() { ls "/proc/$BROKER_PID/fd" 2>/dev/null | wc -l; }

sample() { # sample PREFIX: RSS, peak RSS, fds, threads of the running broker
  R[$1_rss]=$(rss_mib)
  R[$1_hwm]=$(awk -v k="$(hwm_kib)" 'BEGIN { printf "%.0f", k / 1024 }')
  R[$1_fds]=$(fds)
  R[$1_threads]=$(threads)
}

scrape_metrics() { # scrape_metrics PREFIX: time and size of one /metrics response
  local out
  if out=$(curl -s -m 60 -o "$WORK/metrics.txt" -w '%{time_total} %{size_download}' "http://127.0.0.1:$MPORT/metrics"); then
    R[$1_metrics_s]=$(awk -v t="${out% *}" 'BEGIN { printf "%.2f", t }')
    R[$1_metrics_kb]=$(awk -v b="${out#* }" 'BEGIN { printf "%.0f", b / 1024 }')
  else
    R[$1_metrics_s]="failed"
    R[$1_metrics_kb]="-"
  fi
}

partition_dirs() { # partition directories of the benchmark's topics on disk
  find "$DATA" -mindepth 1 -maxdepth 1 -type d -name 'bench-p*-[0-9]*' 2>/dev/null | wc -l
}

# run_bounded SECONDS OUTFILE CMD...: run a client command; stop it early if the broker dies or time runs out.
# Returns the command's status, 124 on timeout, 125 when the broker died meanwhile.
run_bounded() {
  local secs=$1 out=$2 pid rc deadline
  shift 2
  "$@" >"$out" 2>&1 &
  pid=$!
  deadline=$(( $(date +%s) + secs ))
  while kill -0 "$pid" 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
      reap_broker
      return 125
    fi
    if [[ $(date +%s) -ge $deadline ]]; then
      kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.05
  done
  rc=0
  wait "$pid" || rc=$?
  return "$rc"
}
explain_rc() { # explain_rc RC OUTFILE
  case $1 in
    124) echo "timed out; $(tr '\n' ' ' <"$2" | cut -c1-300)" ;;
    125) echo "the broker died while it ran (exit status $BROKER_RC); $(tr '\n' ' ' <"$2" | cut -c1-300)" ;;
    *) echo "exit $1: $(tr '\n' ' ' <"$2" | cut -c1-300)" ;;
  esac
}
BROKER_RC="?"
reap_broker() { # sets BROKER_RC to the exit status of a broker that has exited (call in this shell, not in $(...))
  BROKER_RC=0
  wait "$BROKER_PID" 2>/dev/null || BROKER_RC=$?
}

# start_broker PREFIX: start, then time until the "fjord ready" line and until `topics list` answers.
start_broker() {
  START_N=$((START_N + 1))
  local out="$WORK/broker-$START_N.out" err="$WORK/broker-$START_N.err"
  local t0 ready="" answer="" deadline
  t0=$(now)
  "$FJORD" broker \
    --override "log.dirs=$DATA" \
    --override "listeners=PLAINTEXT://127.0.0.1:$PORT" \
    --override "metrics.listener=127.0.0.1:$MPORT" \
    >"$out" 2>"$err" &
  BROKER_PID=$!
  deadline=$(( $(date +%s) + START_TIMEOUT ))
  while :; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      reap_broker
      fail "$1" "the broker exited during start-up with status $BROKER_RC"
    fi
    if [[ -z "$ready" ]] && grep -q '^fjord ready' "$out" 2>/dev/null; then ready=$(since "$t0"); fi
    if [[ -n "$ready" ]] && timeout 10 "$FJORD" topics list --request-timeout-ms 2000 >/dev/null 2>&1; then
      answer=$(since "$t0"); R[$1_cpu]=$(cpu_s); break
    fi
    if [[ $(date +%s) -ge $deadline ]]; then
      fail "$1" "the broker did not answer \`fjord topics list\` within START_TIMEOUT=${START_TIMEOUT}s"
    fi
    sleep 0.05
  done
  R[$1_ready]=$ready
  R[$1_answer]=$answer
  log "$1: ready line after ${ready}s, topics list answers after ${answer}s, broker CPU ${R[$1_cpu]}s"
}

stop_broker_clean() { # stop_broker_clean KEY: SIGTERM (or SIGINT: both stop it cleanly, see crates/fjord/src/serve.rs)
  local key=$1 t0 deadline
  t0=$(now)
  kill -TERM "$BROKER_PID"
  deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while kill -0 "$BROKER_PID" 2>/dev/null; do
    if [[ $(date +%s) -ge $deadline ]]; then
      kill -KILL "$BROKER_PID" 2>/dev/null || true
      wait "$BROKER_PID" 2>/dev/null || true
      BROKER_PID=""
      fail "clean stop" "the broker did not exit within STOP_TIMEOUT=${STOP_TIMEOUT}s of SIGTERM (killed)"
    fi
    sleep 0.05
  done
  local rc=0
  wait "$BROKER_PID" || rc=$?
  R[$key]=$(since "$t0")
  BROKER_PID=""
  [[ $rc -eq 0 ]] || fail "clean stop" "the broker exited with status $rc after SIGTERM"
  log "clean stop took ${R[$key]}s"
}

stop_broker_kill9() {
  kill -KILL "$BROKER_PID"
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

# ---- report ----------------------------------------------------------------------------------------------
v() { echo "${R[$1]:-–}"; }
report() {
  local mem cpu
  mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  echo
  echo "### $(fmt_int "$PARTITIONS") partitions over $TOPICS topics"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores (${cpu:-unknown CPU}), $mem RAM; $(uname -sr);" \
       "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); fd limit $FD_LIMIT (was $FD_SOFT_BEFORE); fjord $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| step | time | RSS (peak) | open fds | threads |"
  echo "|---|---|---|---|---|"
  echo "| empty broker, before creation | – | $(v empty_rss) MiB | $(v empty_fds) | $(v empty_threads) |"
  echo "| create $TOPICS topics, $(fmt_int "$PARTITIONS") partitions (\`fjord topics create\` wall clock; broker CPU) | $(v create_s) s (slowest topic $(v create_max_s) s; CPU $(v create_cpu) s) | – | – | – |"
  echo "| idle after creation (${IDLE_SECONDS} s) | – | $(v idle_rss) MiB ($(v idle_hwm) MiB) | $(v idle_fds) | $(v idle_threads) |"
  echo "| clean stop (SIGTERM → exit), idle / at the end | $(v stop_s) s / $(v final_stop_s) s | – | – | – |"
  echo "| clean restart: ready line / \`topics list\` answers (broker CPU) | $(v clean_ready) s / $(v clean_answer) s ($(v clean_cpu) s) | $(v clean_rss) MiB ($(v clean_hwm) MiB) | $(v clean_fds) | $(v clean_threads) |"
  echo "| unclean restart (kill -9): ready line / answers (CPU) | $(v unclean_ready) s / $(v unclean_answer) s ($(v unclean_cpu) s) | $(v unclean_rss) MiB ($(v unclean_hwm) MiB) | $(v unclean_fds) | $(v unclean_threads) |"
  if [[ "$BENCH_MESSAGES" -gt 0 ]]; then
    echo "| produce $(fmt_int "$BENCH_MESSAGES") × $BENCH_SIZE B, acks=1, to \`bench-p0\` ($(v bench_parts) partitions, $(v bench_filled) got records) | $(v produce_s) s: $(v produce_rate) | $(v produce_rss) MiB ($(v produce_hwm) MiB) | $(v produce_fds) | $(v produce_threads) |"
    echo "| consume the same from the beginning | $(v consume_s) s: $(v consume_rate) | $(v consume_rss) MiB | $(v consume_fds) | – |"
    echo "| unclean restart with that data: ready line / answers (CPU) | $(v data_ready) s / $(v data_answer) s ($(v data_cpu) s) | $(v data_rss) MiB ($(v data_hwm) MiB) | $(v data_fds) | $(v data_threads) |"
  fi
  echo "| \`/metrics\` scrape, idle / after restart | $(v idle_metrics_s) s, $(v idle_metrics_kb) KiB / $(v clean_metrics_s) s | – | – | – |"
  echo "| data directory on disk | $(v disk) | – | – | – |"
  echo
  if [[ -n "$FAILED" ]]; then
    echo "**FAILED** at $FAILED. Rows after that step were not measured."
  else
    echo "All steps completed."
  fi
}

# ---- 1. create ------------------------------------------------------------------------------------------
log "fjord: $FJORD; data: $DATA; kafka 127.0.0.1:$PORT; metrics 127.0.0.1:$MPORT"
start_broker first
sample empty
log "empty broker: RSS ${R[empty_rss]} MiB, ${R[empty_fds]} fds"

per=$((PARTITIONS / TOPICS))
extra=$((PARTITIONS % TOPICS))
R[bench_parts]=$((per + (extra > 0 ? 1 : 0)))
create_total=0
create_max=0
created=0
create_deadline=$(( $(date +%s) + CREATE_TIMEOUT ))
cpu_before_create=$(cpu_s)
for i in $(seq 0 $((TOPICS - 1))); do
  n=$((per + (i < extra ? 1 : 0)))
  left=$(( create_deadline - $(date +%s) ))
  [[ $left -gt 0 ]] || fail "create" "CREATE_TIMEOUT=${CREATE_TIMEOUT}s used up after $created of $PARTITIONS partitions"
  req_ms=$(( left * 1000 < 300000 ? left * 1000 : 300000 ))   # librdkafka's socket.timeout.ms caps at 300 s
  t0=$(now)
  rc=0
  run_bounded "$left" "$WORK/create-$i.out" \
    "$FJORD" topics create "bench-p$i" --partitions "$n" --request-timeout-ms "$req_ms" || rc=$?
  dt=$(since "$t0")
  if [[ $rc -ne 0 ]]; then
    fail "create" "topic bench-p$i ($n partitions) failed after ${dt}s, $created of $PARTITIONS partitions created before it, $(partition_dirs) partition directories on disk: $(explain_rc $rc "$WORK/create-$i.out")"
  fi
  # The command can succeed although the broker could not open every new partition (and then stopped).
  sleep 0.2
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    reap_broker
    fail "create" "\`fjord topics create bench-p$i\` ($n partitions) reported success after ${dt}s, but the broker then exited with status $BROKER_RC; $(partition_dirs) of $((created + n)) partition directories on disk"
  fi
  created=$((created + n))
  create_total=$(awk -v a="$create_total" -v b="$dt" 'BEGIN { printf "%.2f", a + b }')
  create_max=$(awk -v a="$create_max" -v b="$dt" 'BEGIN { printf "%.2f", (b > a ? b : a) }')
  R[create_s]=$create_total
  R[create_max_s]=$create_max
  log "created bench-p$i ($n partitions) in ${dt}s; $created/$PARTITIONS; broker fds $(fds), RSS $(rss_mib) MiB"
done
R[create_cpu]=$(awk -v a="$cpu_before_create" -v b="$(cpu_s)" 'BEGIN { printf "%.2f", b - a }')
dirs=$(partition_dirs)
[[ "$dirs" -eq "$PARTITIONS" ]] || fail "create" "expected $PARTITIONS partition directories on disk, found $dirs"

# ---- 2. idle --------------------------------------------------------------------------------------------
sleep "$IDLE_SECONDS"
kill -0 "$BROKER_PID" 2>/dev/null || fail "idle" "the broker died after creating the topics"
sample idle
scrape_metrics idle
log "idle: RSS ${R[idle_rss]} MiB (peak ${R[idle_hwm]}), ${R[idle_fds]} fds, ${R[idle_threads]} threads"

# ---- 3. clean restart -----------------------------------------------------------------------------------
stop_broker_clean stop_s
start_broker clean
sleep "$IDLE_SECONDS"
sample clean
scrape_metrics clean
log "after clean restart: RSS ${R[clean_rss]} MiB, ${R[clean_fds]} fds"

# ---- 4. unclean restart ---------------------------------------------------------------------------------
stop_broker_kill9
start_broker unclean
sleep "$IDLE_SECONDS"
sample unclean
log "after unclean restart: RSS ${R[unclean_rss]} MiB, ${R[unclean_fds]} fds"

# ---- 5. produce / consume over many partitions ----------------------------------------------------------
if [[ "$BENCH_MESSAGES" -gt 0 ]]; then
  # No key and sticky.partitioning.linger.ms=0: librdkafka picks a random partition for every record, so
  # the records spread over all the topic's partitions (the default sticky partitioner fills one partition
  # per 10 ms).
  bench_json() { # bench_json NAME FILE: the bench's JSON line
    python3 - "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        print("%.2f %s msgs/s, %s MB/s" % (d["seconds"], f"{d['msgs_per_sec']:,.0f}", f"{d['mb_per_sec']:,.1f}"))
        break
EOF
  }
  rc=0
  run_bounded "$BENCH_TIMEOUT" "$WORK/produce.out" \
    "$FJORD" bench produce --topic bench-p0 --messages "$BENCH_MESSAGES" --size "$BENCH_SIZE" \
    --acks 1 --output json -X sticky.partitioning.linger.ms=0 || rc=$?
  [[ $rc -eq 0 ]] || fail "produce" "fjord bench produce: $(explain_rc $rc "$WORK/produce.out")"
  res=$(bench_json produce "$WORK/produce.out")
  R[produce_s]=${res%% *}; R[produce_rate]=${res#* }
  sample produce
  log "produce: $res"
  # How many partitions received records: sum of log-end offsets from describe.
  run_bounded 120 "$WORK/describe.json" "$FJORD" topics describe bench-p0 --output json || true
  R[bench_filled]=$(python3 - "$WORK/describe.json" <<'EOF' 2>/dev/null || echo "?"
import json, sys
doc = next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("["))
topics = doc if isinstance(doc, list) else doc.get("topics", [doc])
n = 0
for t in topics:
    for p in t.get("partitions", []):
        n += 1 if int(p.get("high_offset", 0)) > 0 else 0
print(n)
EOF
)
  rc=0
  run_bounded "$BENCH_TIMEOUT" "$WORK/consume.out" \
    "$FJORD" bench consume --topic bench-p0 --messages "$BENCH_MESSAGES" --size "$BENCH_SIZE" --output json || rc=$?
  [[ $rc -eq 0 ]] || fail "consume" "fjord bench consume: $(explain_rc $rc "$WORK/consume.out")"
  res=$(bench_json consume "$WORK/consume.out")
  R[consume_s]=${res%% *}; R[consume_rate]=${res#* }
  sample consume
  log "consume: $res"

  stop_broker_kill9
  start_broker data
  sleep "$IDLE_SECONDS"
  sample data
  log "after unclean restart with data: RSS ${R[data_rss]} MiB, ${R[data_fds]} fds"
fi

R[disk]=$(du -sh "$DATA" 2>/dev/null | cut -f1)
stop_broker_clean final_stop_s
report
