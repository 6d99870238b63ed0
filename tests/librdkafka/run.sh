#!/usr/bin/env bash
# librdkafka's own integration suite (the numbered tests of its tests/ directory, run by its test-runner) against a
# fresh Fjord broker per test: issue #17. It builds the librdkafka that rdkafka-sys vendors (the version Fjord's
# own tools link) once into a cache, then runs each line of tests/librdkafka/tests.txt ("NNNN classic|consumer
# expected [subtest substring]") and compares the outcome with the expected one. Exit status 0 only if every outcome is the expected one.
#
#   tests/librdkafka/run.sh                 # every listed test (several minutes each for some)
#   tests/librdkafka/run.sh 0011 0102       # only these numbers
#
# Each test gets PER_TEST_TIMEOUT seconds (900): 0113 alone runs about 9 minutes by its own design (the six
# u_multiple_subscription_changes cases take 15 s of playbook, at least 20 s of settling and two 5 s rounds each,
# and l_unsubscribe relies on the broker's default 3 s group.initial.rebalance.delay.ms).
# Needs a C toolchain (gcc, make, zlib headers); uses $CARGO_TARGET_DIR/debug/fjord, else target/debug/fjord
# (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cache=${FJORD_LIBRDKAFKA_CACHE:-$HOME/.cache/fjord-librdkafka}
per_test_timeout=${PER_TEST_TIMEOUT:-900}

manifest=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "rdkafka-sys"))')
src=$(dirname "$manifest")/librdkafka
build=$cache/$(basename "$(dirname "$manifest")")
if [ ! -x "$build/tests/test-runner" ]; then
  echo "building librdkafka and its test-runner from $src into $build (a few minutes, once)" >&2
  rm -rf "$build" && mkdir -p "$cache" && cp -a "$src" "$build"
  (cd "$build" && ./configure --disable-ssl --disable-gssapi --disable-curl --disable-zstd --disable-lz4-ext \
      >"$build/configure.out" 2>&1 && make -j"$(nproc)" libs >"$build/make.out" 2>&1 \
      && make -C tests -j"$(nproc)" build >>"$build/make.out" 2>&1) \
    || { echo "building librdkafka failed: see $build/configure.out and $build/make.out" >&2; exit 1; }
fi
# The fjord binary of CARGO_TARGET_DIR when it is set (as cargo itself does), else of target/.
target=${CARGO_TARGET_DIR:-$root/target}
[ -x "$target/debug/fjord" ] || cargo build -p fjord >&2
fjord=$target/debug/fjord

wanted=("$@")
work=$(mktemp -d)
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

failures=0
results=()
while read -r num mode expected subtests; do
  case "$num" in ''|\#*) continue ;; esac
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $num "* ]]; then
    continue
  fi
  port=$(free_port)
  name=$num-$mode${subtests:+-$subtests}
  data=$work/$name
  mkdir -p "$data"
  "$fjord" broker --override log.dirs="$data/log" --override listeners=PLAINTEXT://127.0.0.1:"$port" \
    --override num.partitions=4 --override auto.create.topics.enable=true \
    --override metrics.listener=127.0.0.1:0 >"$data/broker.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
  done
  printf 'metadata.broker.list=127.0.0.1:%s\n' "$port" >"$data/test.conf"
  start=$(date +%s)
  set +e
  (cd "$build/tests" && LD_LIBRARY_PATH="$build/src:$build/src-cpp" RDKAFKA_TEST_CONF="$data/test.conf" TESTS="$num" TEST_KAFKA_VERSION=4.0.0 \
    TEST_CONSUMER_GROUP_PROTOCOL="$mode" SUBTESTS="$subtests" timeout "$per_test_timeout" ./test-runner -p1 -L -E) \
    >"$data/test.log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  kill "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=
  if [ $rc -eq 0 ]; then got=pass; elif [ $rc -eq 124 ]; then got=timeout; else got=fail; fi
  verdict=ok
  if [ "$got" != "$expected" ]; then
    verdict=UNEXPECTED
    failures=$((failures + 1))
    cp "$data/test.log" "$cache/last-$name.log"
    cp "$data/broker.log" "$cache/last-$name-broker.log"
  fi
  results+=("$(printf '%s %-8s %-14s %-7s (expected %s, %ss) %s' "$num" "$mode" "${subtests:-all}" "$got" \
    "$expected" "$secs" "$verdict")")
  echo "${results[-1]}"
done < tests/librdkafka/tests.txt

echo
printf '%s\n' "${results[@]}"
if [ $failures -gt 0 ]; then
  echo "$failures unexpected outcome(s); logs in $cache/last-*.log" >&2
  exit 1
fi
