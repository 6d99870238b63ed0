#!/usr/bin/env bash
# Runs every test: unit, property and fuzz-style tests of each crate, and the end-to-end tests that start real
# broker processes and drive them with kcat, confluent-kafka, kafka-python and kafkajs.
# Installs what the tests need when it is missing: kcat (Debian package; needs root or sudo), a Python venv
# with the client libraries in .venv, and kafkajs (npm) under tests/clients/kafkajs.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v kcat >/dev/null 2>&1; then
  echo "test.sh: installing kcat" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import confluent_kafka, kafka" 2>/dev/null; then
  echo "test.sh: creating .venv with the Python Kafka clients" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
fi
if ! command -v node >/dev/null 2>&1; then
  echo "test.sh: installing Node.js" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/clients/kafkajs/node_modules/kafkajs ]; then
  echo "test.sh: installing kafkajs" >&2
  (cd tests/clients/kafkajs && npm ci --no-audit --no-fund --silent)
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
exec cargo nextest run --workspace --no-fail-fast "$@"
