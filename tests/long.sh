#!/usr/bin/env bash
# The long runs that `./test.sh` (and so `.ci/run`) leaves out to stay within CI's time budget: every test marked
# `#[ignore = "long run: tests/long.sh"]` (today the Java client's group, transaction, Kafka Streams and Kafka
# Connect suites against three brokers, about 6 minutes of test time). Installs what they need the way
# `./test.sh` does (it is `./test.sh` with nextest's `--run-ignored only`). Extra arguments go to nextest.
# Other long runs have their own commands in the README: the chaos schedule (CHAOS_SECS), librdkafka's suite
# (tests/librdkafka/run.sh) and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./test.sh --run-ignored only -E 'not test(=child_process_entry_point)' "$@"
