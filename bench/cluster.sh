#!/usr/bin/env bash
# Cluster benchmark (issue #11): one broker against three brokers with replication factor 3, on this machine.
#
# With the release binary, each on fresh temporary directories and free 127.0.0.1 ports:
#   1. one broker (`fjord broker`, single-node): `fjord bench produce --acks all` on a topic with PARTITIONS
#      partitions, then `fjord bench e2e --acks all --rate RATE`;
#   2. three `fjord broker` processes from KRaft property files: the same on a topic with replication factor 3
#      and min.insync.replicas=2;
#   3. failover: an acks=all producer (confluent-kafka, from the repository's .venv) sends one message every
#      5 ms to a one-partition RF=3 topic; the leader's process is killed with SIGKILL; the time from the kill
#      to the first acknowledgement of a message sent after it is the failover time (default settings:
#      broker.session.timeout.ms=9000). Repeated FAILOVERS times, a different leader each time.
# Prints a markdown table, the machine and the date.
#
# Usage: bench/cluster.sh
# Environment (all optional): MESSAGES (1000000), SIZE (100), PARTITIONS (3), RATE (10000), E2E_MESSAGES (100000),
#   FAILOVERS (3), FJORD (binary; default target/release/fjord), PYTHON (default .venv/bin/python),
#   KEEP_DATA=1 keeps the temporary directory and logs.
set -euo pipefail

MESSAGES=${MESSAGES:-1000000}
SIZE=${SIZE:-100}
PARTITIONS=${PARTITIONS:-3}
RATE=${RATE:-10000}
E2E_MESSAGES=${E2E_MESSAGES:-100000}
FAILOVERS=${FAILOVERS:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FJORD=${FJORD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

die() { echo "cluster.sh: $*" >&2; exit 2; }
[[ -x "$FJORD" ]] || die "no release binary at $FJORD: run 'cargo build --release -p fjord' first"
[[ -x "$PYTHON" ]] || die "no python with confluent-kafka at $PYTHON: run ./test.sh once (it creates .venv), or set PYTHON"
"$PYTHON" -c 'import confluent_kafka' 2>/dev/null || die "$PYTHON has no confluent_kafka"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d -t fjord-cluster-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP_DATA:-}" ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# wait_ready BOOTSTRAP: until `fjord cluster info` answers (bounded: 120 s).
wait_ready() {
  local deadline=$((SECONDS + 120))
  until "$FJORD" cluster info -b "$1" >/dev/null 2>&1; do
    [[ $SECONDS -lt $deadline ]] || die "no broker answered at $1 within 120 s"
    sleep 0.2
  done
}

# bench_pair NAME BOOTSTRAP TOPIC: produce throughput and e2e latency, as JSON lines in $WORK/NAME.json.
bench_pair() {
  local name=$1 bootstrap=$2 topic=$3
  "$FJORD" bench produce -b "$bootstrap" --topic "$topic" --acks all --messages "$MESSAGES" --size "$SIZE" \
    --partitions "$PARTITIONS" --output json >"$WORK/$name-produce.json"
  "$FJORD" bench e2e -b "$bootstrap" --topic "$topic-e2e" --acks all --rate "$RATE" --messages "$E2E_MESSAGES" \
    --size "$SIZE" --partitions "$PARTITIONS" --output json >"$WORK/$name-e2e.json"
}

# ---- 1. one broker ---------------------------------------------------------------------------------------
P1=$(free_port)
mkdir -p "$WORK/single"
cat >"$WORK/single.properties" <<EOF
listeners=PLAINTEXT://127.0.0.1:$P1
log.dirs=$WORK/single
EOF
"$FJORD" broker --config "$WORK/single.properties" >"$WORK/single.log" 2>&1 &
PIDS+=($!)
wait_ready "127.0.0.1:$P1"
log "one broker on 127.0.0.1:$P1"
"$FJORD" topics create bench1 -p "$PARTITIONS" -r 1 -b "127.0.0.1:$P1" >/dev/null
"$FJORD" topics create bench1-e2e -p "$PARTITIONS" -r 1 -b "127.0.0.1:$P1" >/dev/null
bench_pair single "127.0.0.1:$P1" bench1
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()

# ---- 2. three brokers, RF=3 ------------------------------------------------------------------------------
declare -a CP KP
for i in 1 2 3; do CP[$i]=$(free_port); KP[$i]=$(free_port); done
VOTERS="1@127.0.0.1:${CP[1]},2@127.0.0.1:${CP[2]},3@127.0.0.1:${CP[3]}"
start_node() {
  local i=$1
  "$FJORD" broker --config "$WORK/broker-$i.properties" >>"$WORK/broker-$i.log" 2>&1 &
  PID[$i]=$!
  PIDS+=($!)
}
declare -a PID
for i in 1 2 3; do
  mkdir -p "$WORK/broker-$i"
  cat >"$WORK/broker-$i.properties" <<EOF
node.id=$i
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:${KP[$i]},CONTROLLER://127.0.0.1:${CP[$i]}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=$VOTERS
log.dirs=$WORK/broker-$i
EOF
  start_node "$i"
done
BOOT="127.0.0.1:${KP[1]},127.0.0.1:${KP[2]},127.0.0.1:${KP[3]}"
wait_ready "$BOOT"
# Every broker unfenced before creating RF=3 topics (bounded).
deadline=$((SECONDS + 60))
until "$FJORD" topics create bench3 -p "$PARTITIONS" -r 3 --config min.insync.replicas=2 -b "$BOOT" >/dev/null 2>&1; do
  [[ $SECONDS -lt $deadline ]] || die "could not create an RF=3 topic within 60 s"
  sleep 0.5
done
"$FJORD" topics create bench3-e2e -p "$PARTITIONS" -r 3 --config min.insync.replicas=2 -b "$BOOT" >/dev/null
log "three brokers on $BOOT"
bench_pair cluster "$BOOT" bench3

# ---- 3. failover -----------------------------------------------------------------------------------------
"$FJORD" topics create failover -p 1 -r 3 --config min.insync.replicas=2 -b "$BOOT" >/dev/null
leader_of() {
  "$PYTHON" - "$BOOT" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics("failover", timeout=10)
print(md.topics["failover"].partitions[0].leader)
PY
}
port_index() { for i in 1 2 3; do [[ "${KP[$i]}" == "$1" ]] && echo "$i"; done; }
: >"$WORK/failover.txt"
for round in $(seq 1 "$FAILOVERS"); do
  leader=$(leader_of)
  [[ "$leader" =~ ^[123]$ ]] || die "no leader for failover-0 (got '$leader')"
  victim=${PID[$leader]}
  "$PYTHON" - "$BOOT" "$victim" >>"$WORK/failover.txt" <<'PY'
import os, signal, sys, time
from confluent_kafka import Producer
boot, victim = sys.argv[1], int(sys.argv[2])
acks = []
p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True, "linger.ms": 0,
              "message.timeout.ms": 60000})
def cb(err, msg, sent):
    if err is None:
        acks.append((sent, time.monotonic()))
start = time.monotonic()
killed = None
while True:
    now = time.monotonic()
    if killed is None and now - start > 2.0:
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
    sent = time.monotonic()
    p.produce("failover", b"x", on_delivery=lambda e, m, s=sent: cb(e, m, s))
    p.poll(0.005)
    if killed is not None and any(s > killed for s, _ in acks):
        break
    if killed is not None and now - killed > 60:
        print("failover: no acknowledgement within 60 s"); sys.exit(1)
p.flush(30)
first = min(t for s, t in acks if s > killed)
print(f"{first - killed:.3f}")
PY
  log "failover round $round: killed broker $leader after $(tail -1 "$WORK/failover.txt") s a new leader acknowledged"
  sleep 1
  start_node "$leader"
  # Let it rejoin before the next round (bounded).
  deadline=$((SECONDS + 60))
  until "$FJORD" cluster status -b "$BOOT" 2>/dev/null | grep -q "; 0 under-replicated, 0 offline"; do
    [[ $SECONDS -lt $deadline ]] || break
    sleep 0.5
  done
  sleep 2
done

# ---- report ----------------------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$FAILOVERS" <<'PY'
import json, os, platform, subprocess, sys, datetime
work, rounds = sys.argv[1], int(sys.argv[2])
def j(n): return json.load(open(os.path.join(work, n)))
sp, se, cp, ce = j("single-produce.json"), j("single-e2e.json"), j("cluster-produce.json"), j("cluster-e2e.json")
fo = [float(l) for l in open(os.path.join(work, "failover.txt")) if l.strip() and l[0].isdigit()]
cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"{datetime.date.today()}, {platform.machine()}, {cpu} CPUs, release build\n")
print("| | one broker | three brokers, RF=3, min.insync.replicas=2 |")
print("|---|---|---|")
print(f"| acks=all produce, {sp['messages']:,} x {sp['size']} B | {sp['msgs_per_sec']:,.0f} msgs/s ({sp['mb_per_sec']:.1f} MB/s) | {cp['msgs_per_sec']:,.0f} msgs/s ({cp['mb_per_sec']:.1f} MB/s) |")
print(f"| acks=all send-to-ack p99 | {sp['details']['latency']['p99_ms']} ms | {cp['details']['latency']['p99_ms']} ms |")
print(f"| e2e at {se['details']['rate']:,} msgs/s, p50 / p99 | {se['details']['latency']['p50_ms']} / {se['details']['latency']['p99_ms']} ms | {ce['details']['latency']['p50_ms']} / {ce['details']['latency']['p99_ms']} ms |")
print(f"| RF=3 throughput / one broker | | {cp['msgs_per_sec'] / sp['msgs_per_sec']:.2f} |")
if fo:
    print(f"| failover (SIGKILL of the leader to the first new acks=all ack), {len(fo)} rounds | | " + ", ".join(f"{x:.2f} s" for x in fo) + " |")
PY
