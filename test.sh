#!/usr/bin/env bash
# Runs every test: unit, property and fuzz-style tests of each crate, and the end-to-end tests that start real
# broker processes and drive them with kcat, confluent-kafka, kafka-python, kafkajs and the Java client.
# Installs what the tests need when it is missing: kcat and headless Chromium (Debian's `chromium`, for the
# dashboard's browser tests; need root or sudo), PostgreSQL (Debian's `postgresql`, for the PostgreSQL sink's
# tests), a Python venv with the client libraries in .venv, kafkajs and playwright-core (npm; playwright-core
# drives Debian's Chromium and downloads no browser) under tests/clients/kafkajs, and Java 17 with Maven for
# Apache Kafka's Java client (tests/java, dependencies from Maven Central cached in ~/.m2).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v kcat >/dev/null 2>&1; then
  echo "test.sh: installing kcat" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "test.sh: installing chromium" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# PostgreSQL's server (initdb, pg_ctl, psql) for the PostgreSQL sink's tests (crates/fjord/tests/connect_postgres.rs),
# which make a throwaway cluster in a temporary directory; as root they run the server as the `postgres` user the
# package creates (PostgreSQL refuses to run as root). The package's own cluster is not needed and not started.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "test.sh: installing postgresql" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import confluent_kafka, kafka, fastavro, httpx, authlib, cachetools, jsonschema, google.protobuf, osmem_server, schemathesis" 2>/dev/null; then
  echo "test.sh: creating .venv with the Python Kafka clients" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
fi
if ! command -v node >/dev/null 2>&1; then
  echo "test.sh: installing Node.js" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/clients/kafkajs/node_modules/kafkajs ] \
  || [ ! -d tests/clients/kafkajs/node_modules/@kafkajs/confluent-schema-registry ] \
  || [ ! -d tests/clients/kafkajs/node_modules/playwright-core ]; then
  echo "test.sh: installing kafkajs and playwright-core" >&2
  (cd tests/clients/kafkajs && npm ci --no-audit --no-fund --silent)
fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  echo "test.sh: installing Java 17 and Maven" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
fi
# Apache Kafka's Java client, Kafka Streams and JUnit from Maven Central into ~/.m2, once and serially (the Java
# test classes then run at once under nextest, and Maven 3.8 does not lock its local repository). It runs one test
# class that needs no broker: a run that matches no test never resolves surefire's JUnit provider, which every
# parallel run would then download at once.
java_build=$(mktemp -d)
mvn -B -q -f tests/java/pom.xml -Dfjord.build.dir="$java_build" test -Dtest=StreamsReferenceTest >/dev/null
rm -rf "$java_build"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
exec cargo nextest run --workspace --no-fail-fast "$@"
