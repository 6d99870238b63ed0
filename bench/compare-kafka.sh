#!/usr/bin/env bash
# Apache Kafka as the side-by-side baseline (issue #12, item 5).
#
# Starts a single-node Apache Kafka 4.4 (KRaft, combined broker+controller, from Maven Central through
# bench/kafka/pom.xml) and then a release `fjord broker`, one after the other on this machine, each on a fresh
# data directory and free 127.0.0.1 ports, and runs the same loads against each:
#   - `fjord bench` (librdkafka): produce 100 B and 1 KiB at acks=1 and acks=all, consume both sizes, and
#     `fjord bench e2e` at a steady rate (acks=1 and acks=all);
#   - Apache Kafka's perf tools (org.apache.kafka.tools.ProducerPerformance and ConsumerPerformance from
#     kafka-tools, in their own JVM with -Xmx512M as kafka-producer-perf-test.sh runs them): the same produce
#     and consume loads.
# For each load it reads the broker's CPU time (utime+stime of /proc/PID/stat) before and after; at the end of
# a broker's run its peak RSS (VmHWM of /proc/PID/status). Prints a markdown table: both brokers and their ratio.
#
# Same settings on both brokers: one partition per topic, replication factor 1, no compression,
# log.segment.bytes=1 GiB and the other log settings at their (shared) defaults,
# group.initial.rebalance.delay.ms=0; the same client settings whichever broker they talk to.
# Durability: Fjord fsyncs acks=all writes before answering (group commit) and never fsyncs acks=1 writes on
# the produce path. Apache Kafka by default never fsyncs on the produce path, whatever the acks. So Kafka runs
# at its defaults, and the acks=all loads run a second time on Kafka against topics with flush.messages=1
# (Kafka's per-topic log.flush.interval.messages), which makes Kafka fsync every append before it answers:
# the closest Kafka gets to Fjord's acks=all policy. Both Kafka figures are printed.
#
# Usage: bench/compare-kafka.sh [--quick]
#   --quick: small message counts (a smoke test of the script, not numbers to quote).
# Environment (all optional): FJORD (a fjord binary; by default `cargo build --release -p fjord` is run and
#   ${CARGO_TARGET_DIR:-target}/release/fjord used), JAVA (default: $JAVA_HOME/bin/java or java on PATH),
#   KAFKA_HEAP (default "-Xms1g -Xmx1g", kafka-server-start.sh's), CACHE (where the Kafka classpath is cached;
#   default ~/.cache/fjord-bench), M100 / M1K (fjord bench message counts), JM100 / JM1K (the Java tools'; fewer,
#   since the Java producer with its default 16 KiB batches is slower, and Kafka with an fsync per batch much
#   slower), E2E_MESSAGES / RATE (e2e),
#   ROUNDS (default 1: how many times to run Kafka then Fjord; the table shows each figure's best round, since
#   other work on a shared machine only ever makes a figure worse), RESULTS (also write the table there),
#   KEEP_DATA=1 (keep the temporary directory: logs, raw outputs).
set -euo pipefail

QUICK=
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
if [[ -n $QUICK ]]; then
  M100=${M100:-300000}; M1K=${M1K:-100000}; JM100=${JM100:-100000}; JM1K=${JM1K:-30000}
  E2E_MESSAGES=${E2E_MESSAGES:-20000}
else
  M100=${M100:-5000000}; M1K=${M1K:-1000000}; JM100=${JM100:-1000000}; JM1K=${JM1K:-200000}
  E2E_MESSAGES=${E2E_MESSAGES:-100000}
fi
RATE=${RATE:-10000}
ROUNDS=${ROUNDS:-1}
KAFKA_VERSION=4.4.0
KAFKA_HEAP=${KAFKA_HEAP:--Xms1g -Xmx1g}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CACHE:-$HOME/.cache/fjord-bench}

die() { echo "compare-kafka.sh: $*" >&2; exit 2; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if [[ -z ${JAVA:-} ]]; then
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then JAVA=$JAVA_HOME/bin/java; else JAVA=$(command -v java || true); fi
fi
[[ -n $JAVA && -x $JAVA ]] || die "no java found (install a JDK 17 or newer, or set JAVA)"
command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch Apache Kafka from Maven Central"
command -v python3 >/dev/null || die "python3 is needed (free ports, the report)"
[[ -r /proc/self/stat ]] || die "/proc is needed for the broker's CPU time and RSS"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"

if [[ -z ${FJORD:-} ]]; then
  command -v cargo >/dev/null || die "cargo is needed to build the release broker (or set FJORD)"
  log "cargo build --release -p fjord"
  (cd "$ROOT" && cargo build --release -q -p fjord) || die "cargo build --release -p fjord failed"
  FJORD=${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord
fi
[[ -x $FJORD ]] || die "no fjord binary at $FJORD"

# The Kafka classpath, resolved once per pom (Maven caches the jars in ~/.m2).
mkdir -p "$CACHE"
POM=$ROOT/bench/kafka/pom.xml
CP_FILE=$CACHE/kafka-classpath-$(sha256sum "$POM" | cut -c1-16).txt
if [[ ! -s $CP_FILE ]]; then
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central"
  mvn -B -q -f "$POM" dependency:build-classpath -Dmdep.outputFile="$CP_FILE.tmp" -Dmdep.includeScope=runtime \
    >&2 || die "mvn could not resolve $POM"
  mv "$CP_FILE.tmp" "$CP_FILE"
fi
KAFKA_CP=$(cat "$CP_FILE")
IFS=: read -ra jars <<<"$KAFKA_CP"
for j in "${jars[@]}"; do [[ -f $j ]] || die "$j is missing (remove $CP_FILE to resolve again)"; done
[[ $KAFKA_CP == *kafka_2.13-$KAFKA_VERSION.jar* && $KAFKA_CP == *kafka-tools-$KAFKA_VERSION.jar* ]] ||
  die "$CP_FILE does not hold kafka_2.13 and kafka-tools $KAFKA_VERSION"

WORK=$(mktemp -d -t fjord-compare-kafka.XXXXXX)
BROKER_PID=
cleanup() {
  if [[ -n $BROKER_PID ]]; then kill -9 "$BROKER_PID" 2>/dev/null || true; fi
  if [[ -n ${KEEP_DATA:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
EOF
# The JVM flags of kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS); the log configuration keeps WARN and up.
JVM_OPTS=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true "-Dlog4j2.configurationFile=$WORK/log4j2.yaml")
java_tool() { "$JAVA" -Xmx512M "${JVM_OPTS[@]}" -cp "$KAFKA_CP" "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime+stime of a process (all its threads), in clock ticks; the fields after "(comm)".
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# Machine and versions, for the report.
{
  echo "date=$(date -u +%Y-%m-%d)"
  echo "nproc=$(nproc)"
  echo "mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel=$(uname -r)"
  echo "clk_tck=$(getconf CLK_TCK)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "java=$("$JAVA" -version 2>&1 | head -1)"
  echo "kafka=$KAFKA_VERSION"
  echo "fjord=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "kafka_heap=$KAFKA_HEAP"
  echo "m100=$M100"; echo "m1k=$M1K"; echo "jm100=$JM100"; echo "jm1k=$JM1K"; echo "e2e_messages=$E2E_MESSAGES"; echo "rate=$RATE"
  echo "quick=$QUICK"
  echo "rounds=$ROUNDS"
} >"$WORK/machine.txt"
log "machine: $(tr '\n' ' ' <"$WORK/machine.txt")"

# ---- brokers ------------------------------------------------------------------------------------------------
# Both property files carry the settings the comparison fixes; everything else is each broker's default.
common_props() {
  cat <<EOF
log.dirs=$1
num.partitions=1
log.segment.bytes=1073741824
group.initial.rebalance.delay.ms=0
EOF
}

start_kafka() {
  local data=$WORK/kafka-data port ctl
  port=$(free_port); ctl=$(free_port)
  mkdir -p "$data"
  {
    common_props "$data"
    cat <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$ctl
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
EOF
  } >"$WORK/kafka.properties"
  local id
  id=$("$JAVA" -cp "$KAFKA_CP" kafka.tools.StorageTool random-uuid) || die "kafka StorageTool random-uuid failed"
  "$JAVA" "${JVM_OPTS[@]}" -cp "$KAFKA_CP" kafka.tools.StorageTool format --standalone -t "$id" \
    -c "$WORK/kafka.properties" >"$WORK/kafka-format.log" 2>&1 ||
    die "formatting Kafka's storage failed: $(tail -5 "$WORK/kafka-format.log")"
  # shellcheck disable=SC2086 # KAFKA_HEAP is a list of JVM flags
  "$JAVA" $KAFKA_HEAP "${JVM_OPTS[@]}" -cp "$KAFKA_CP" kafka.Kafka "$WORK/kafka.properties" \
    >"$WORK/kafka.log" 2>&1 &
  BROKER_PID=$!
  BOOT=127.0.0.1:$port
}

start_fjord() {
  local data=$WORK/fjord-data port
  port=$(free_port)
  mkdir -p "$data"
  { common_props "$data"; echo "listeners=PLAINTEXT://127.0.0.1:$port"; } >"$WORK/fjord.properties"
  "$FJORD" broker --config "$WORK/fjord.properties" >"$WORK/fjord.log" 2>&1 &
  BROKER_PID=$!
  BOOT=127.0.0.1:$port
}

# wait_ready NAME: until the broker answers a metadata request (bounded: 120 s).
wait_ready() {
  local deadline=$((SECONDS + 120))
  until "$FJORD" topics list -b "$BOOT" >/dev/null 2>&1; do
    kill -0 "$BROKER_PID" 2>/dev/null || die "$1 exited during start-up: $(tail -20 "$WORK/$1.log")"
    [[ $SECONDS -lt $deadline ]] || die "$1 did not answer at $BOOT within 120 s: $(tail -20 "$WORK/$1.log")"
    sleep 0.5
  done
}

stop_broker() {
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$BROKER_PID" 2>/dev/null; do
    if [[ $SECONDS -ge $deadline ]]; then kill -9 "$BROKER_PID" 2>/dev/null || true; fi
    sleep 0.2
  done
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=
}

create_topic() {
  "$FJORD" topics create "$1" -p 1 -r 1 -b "$BOOT" >>"$WORK/topics.log" 2>&1 ||
    die "cannot create topic $1 on $BOOT: $(tail -3 "$WORK/topics.log")"
}
# kafka_topic_fsync TOPIC: a topic with flush.messages=1 (Kafka only; with Kafka's own tool, since the fjord
# command line accepts only the topic configs Fjord knows).
kafka_topic_fsync() {
  java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --create --topic "$1" --partitions 1 \
    --replication-factor 1 --config flush.messages=1 >>"$WORK/topics.log" 2>&1 ||
    die "cannot create topic $1 with flush.messages=1 on $BOOT: $(tail -3 "$WORK/topics.log")"
}

# ---- loads --------------------------------------------------------------------------------------------------
# load BROKER LOAD PARSER MESSAGES SIZE COMMAND...: runs COMMAND, records the broker's CPU ticks around it
# and where its output is, as one JSON line of $WORK/results.jsonl.
load() {
  local broker=$1 name=$2 parser=$3 messages=$4 size=$5
  shift 5
  local out=$WORK/out-$ROUND-$broker-$name.txt before after
  log "$broker: $name"
  before=$(cpu_ticks "$BROKER_PID")
  "$@" >"$out" 2>"$out.err" || die "$broker: load $name failed ($*): $(tail -20 "$out.err")"
  after=$(cpu_ticks "$BROKER_PID")
  printf '{"round":%s,"broker":"%s","load":"%s","parser":"%s","messages":%s,"size":%s,"cpu_ticks":%s,"out":"%s"}\n' \
    "$ROUND" "$broker" "$name" "$parser" "$messages" "$size" "$((after - before))" "$out" >>"$WORK/results.jsonl"
}

fb() { "$FJORD" bench "$@" -b "$BOOT" --output json; }
jprod() { # TOPIC MESSAGES SIZE ACKS
  java_tool org.apache.kafka.tools.ProducerPerformance --topic "$1" --num-records "$2" --record-size "$3" \
    --throughput -1 --command-property "bootstrap.servers=$BOOT" "acks=$4" linger.ms=5 compression.type=none
}
jcons() { # TOPIC MESSAGES
  java_tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BOOT" --topic "$1" --num-records "$2" \
    --timeout 60000
}

# run_loads BROKER [fsync]: the common loads; with "fsync" (Kafka only) the acks=all loads again on topics
# with flush.messages=1.
run_loads() {
  local b=$1 t
  # Every topic first: a topic just created may take a moment to reach the broker's metadata cache (Kafka),
  # and `fjord bench consume` and `e2e` refuse a topic they cannot see.
  for t in warmup warmup-e2e fb-p100-1 fb-p100-all fb-p1k-1 fb-p1k-all jp-p100-1 jp-p100-all jp-p1k-1 jp-p1k-all \
    e2e-1 e2e-all; do
    create_topic "$t"
  done
  if [[ ${2:-} == fsync ]]; then
    for t in fs-fb-p100-all fs-fb-p1k-all fs-jp-p100-all fs-jp-p1k-all fs-e2e-all; do kafka_topic_fsync "$t"; done
  fi
  # Warm-up (JIT, page cache, allocator), not measured: the same for both brokers.
  "$FJORD" bench produce -b "$BOOT" --topic warmup --messages "$((M100 / 5))" --size 100 --acks 1 \
    --output json >/dev/null || die "$b: warm-up failed"
  java_tool org.apache.kafka.tools.ProducerPerformance --topic warmup --num-records "$((M100 / 10))" \
    --record-size 100 --throughput -1 --command-property "bootstrap.servers=$BOOT" acks=1 >/dev/null 2>&1 ||
    die "$b: Java warm-up failed"
  "$FJORD" bench consume -b "$BOOT" --topic warmup --messages "$((M100 / 5))" --output json >/dev/null ||
    die "$b: consume warm-up failed"
  # Many small requests (linger.ms=0): without this the JVM meets the e2e loads' request rate while still
  # compiling, and Kafka's first e2e run falls seconds behind.
  "$FJORD" bench e2e -b "$BOOT" --topic warmup-e2e --messages "$((RATE * 3))" --rate "$RATE" --acks 1 \
    --output json >/dev/null || die "$b: e2e warm-up failed"
  load "$b" produce-100-acks1 fjord-bench "$M100" 100 fb produce --topic fb-p100-1 --messages "$M100" --size 100 --acks 1
  load "$b" produce-100-acksall fjord-bench "$M100" 100 fb produce --topic fb-p100-all --messages "$M100" --size 100 --acks all
  load "$b" produce-1k-acks1 fjord-bench "$M1K" 1024 fb produce --topic fb-p1k-1 --messages "$M1K" --size 1024 --acks 1
  load "$b" produce-1k-acksall fjord-bench "$M1K" 1024 fb produce --topic fb-p1k-all --messages "$M1K" --size 1024 --acks all
  load "$b" consume-100 fjord-bench "$M100" 100 fb consume --topic fb-p100-1 --messages "$M100" --size 100
  load "$b" consume-1k fjord-bench "$M1K" 1024 fb consume --topic fb-p1k-1 --messages "$M1K" --size 1024
  load "$b" jproduce-100-acks1 java-producer "$JM100" 100 jprod jp-p100-1 "$JM100" 100 1
  load "$b" jproduce-100-acksall java-producer "$JM100" 100 jprod jp-p100-all "$JM100" 100 all
  load "$b" jproduce-1k-acks1 java-producer "$JM1K" 1024 jprod jp-p1k-1 "$JM1K" 1024 1
  load "$b" jproduce-1k-acksall java-producer "$JM1K" 1024 jprod jp-p1k-all "$JM1K" 1024 all
  load "$b" jconsume-100 java-consumer "$JM100" 100 jcons jp-p100-1 "$JM100"
  load "$b" jconsume-1k java-consumer "$JM1K" 1024 jcons jp-p1k-1 "$JM1K"
  load "$b" e2e-acks1 fjord-bench "$E2E_MESSAGES" 100 fb e2e --topic e2e-1 --messages "$E2E_MESSAGES" --size 100 --rate "$RATE" --acks 1
  load "$b" e2e-acksall fjord-bench "$E2E_MESSAGES" 100 fb e2e --topic e2e-all --messages "$E2E_MESSAGES" --size 100 --rate "$RATE" --acks all
  if [[ ${2:-} == fsync ]]; then
    local f=kafka-fsync
    load "$f" produce-100-acksall fjord-bench "$M100" 100 fb produce --topic fs-fb-p100-all --messages "$M100" --size 100 --acks all
    load "$f" produce-1k-acksall fjord-bench "$M1K" 1024 fb produce --topic fs-fb-p1k-all --messages "$M1K" --size 1024 --acks all
    load "$f" jproduce-100-acksall java-producer "$JM100" 100 jprod fs-jp-p100-all "$JM100" 100 all
    load "$f" jproduce-1k-acksall java-producer "$JM1K" 1024 jprod fs-jp-p1k-all "$JM1K" 1024 all
    load "$f" e2e-acksall fjord-bench "$E2E_MESSAGES" 100 fb e2e --topic fs-e2e-all --messages "$E2E_MESSAGES" --size 100 --rate "$RATE" --acks all
  fi
}

# finish_broker NAME: peak and idle RSS into the report, then stop it and drop its data.
finish_broker() {
  echo "{\"round\":$ROUND,\"broker\":\"$1\",\"rss_start_kb\":$2,\"hwm_kb\":$(status_kb "$BROKER_PID" VmHWM)}" >>"$WORK/rss.jsonl"
  stop_broker
  rm -rf "$WORK/$1-data"
}

for ROUND in $(seq 1 "$ROUNDS"); do
  log "round $ROUND of $ROUNDS: Apache Kafka $KAFKA_VERSION (heap $KAFKA_HEAP)"
  start_kafka
  wait_ready kafka
  rss0=$(status_kb "$BROKER_PID" VmRSS)
  run_loads kafka fsync
  finish_broker kafka "$rss0"

  log "round $ROUND of $ROUNDS: Fjord ($FJORD)"
  start_fjord
  wait_ready fjord
  rss0=$(status_kb "$BROKER_PID" VmRSS)
  run_loads fjord
  finish_broker fjord "$rss0"
done

echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/machine.txt"
python3 "$ROOT/bench/kafka/report.py" "$WORK" | tee "${RESULTS:-/dev/null}"
