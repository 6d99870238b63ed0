#!/usr/bin/env bash
# The PostgreSQL sink's upsert throughput: a throwaway PostgreSQL cluster (Debian's postgresql package: initdb and
# pg_ctl under a temporary directory, fsync off), a broker and a standalone Connect worker; N keyed records with a
# 4-field schema (JsonConverter envelope) are produced while the connector is paused, then it is resumed and timed
# until every row is in the table (round 1: upserts into an empty table), then N updates of the same keys are
# produced while paused and timed the same way (round 2: upserts that all hit existing rows). Rows per second of
# each round are printed; the count of rows is checked with psql.
#
#   cargo build --release -p fjord && bench/connect-postgres.sh          # N=200000 BATCH=3000
#   FJORD=$CARGO_TARGET_DIR/debug/fjord N=100000 bench/connect-postgres.sh
#
# As root the PostgreSQL server runs as the `postgres` user (initdb refuses root).
set -euo pipefail

N=${N:-200000}
BATCH=${BATCH:-3000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FJORD=${FJORD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fjord}
[ -x "$FJORD" ] || { echo "$FJORD is missing: cargo build --release -p fjord (or set FJORD=)" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fjord-pg-bench.XXXXXX)
BROKER_PID= WORKER_PID=
AS=()
if [ "$(id -u)" -eq 0 ]; then
  PGUSER_OS=postgres; id postgres >/dev/null 2>&1 || PGUSER_OS=nobody
  chown -R "$PGUSER_OS" "$WORK"; AS=(runuser -u "$PGUSER_OS" --)
fi
cleanup() {
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  (cd / && "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate -w stop >/dev/null 2>&1) || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib-connect.sh"

PGPORT=$(free_port)
(cd / && "${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U fjord --auth=trust -E UTF8 --no-sync >/dev/null)
(cd / && "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null)
psql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U fjord -d postgres -Atc "$1"; }

start_broker
"$FJORD" topics create bench --partitions 1 >/dev/null

start_worker

SCHEMA='{"type":"struct","fields":[{"field":"n","type":"int64"},{"field":"name","type":"string"},{"field":"price","type":"double"},{"field":"active","type":"boolean"}]}'
records() { # $1: round tag
  awk -v tag="$1" -v n="$N" -v s="$SCHEMA" 'BEGIN { for (i = 0; i < n; i++)
    printf "key-%d|{\"schema\":%s,\"payload\":{\"n\":%d,\"name\":\"%s-%d\",\"price\":%d.5,\"active\":true}}\n", i, s, i, tag, i, i }'
}
curl -sf -X PUT -H 'Content-Type: application/json' "http://$REST/connectors/pg/config" --data @- >/dev/null <<END
{"connector.class":"PostgresSink","topics":"bench","connection.url":"jdbc:postgresql://127.0.0.1:$PGPORT/postgres",
 "connection.user":"fjord","insert.mode":"upsert","pk.mode":"record_key","pk.fields":"id","auto.create":"true",
 "batch.size":"$BATCH","key.converter":"org.apache.kafka.connect.storage.StringConverter"}
END
PG_PID=$(head -1 "$WORK/pg/postmaster.pid")
# Timed from the first row of the round in the table (so the task's start and group join are not counted) to
# the last; the figure with the start included is printed beside it.
round() { # $1: tag
  curl -sf -X PUT "http://$REST/connectors/pg/pause" >/dev/null
  records "$1" | "$FJORD" produce bench --key-separator '|' >/dev/null 2>&1
  local resumed first="" c0=0 c end
  resumed=$(now)
  local w0 b0 p0; w0=$(cpu "$WORKER_PID"); b0=$(cpu "$BROKER_PID"); p0=$(cpu "$PG_PID")
  curl -sf -X PUT "http://$REST/connectors/pg/resume" >/dev/null
  for _ in $(seq 3000); do
    c=$(psql "SELECT count(*) FROM bench WHERE name LIKE '$1-%'" 2>/dev/null || echo 0)
    if [ -z "$first" ] && [ "$c" -gt 0 ]; then first=$(now); c0=$c; fi
    [ "$c" = "$N" ] && break
    sleep 0.1
  done
  end=$(now)
  local w1 b1 p1; w1=$(cpu "$WORKER_PID"); b1=$(cpu "$BROKER_PID"); p1=$(cpu "$PG_PID")
  [ "$c" = "$N" ] || { echo "round $1: only $c of $N rows" >&2; tail -20 "$WORK/worker.log" >&2; exit 1; }
  awk -v n="$N" -v c0="$c0" -v r="$resumed" -v f="$first" -v e="$end" -v t="$1" 'BEGIN {
    printf "%-8s %d rows: %.0f rows/s (%d rows in %.2f s after the first); %.0f rows/s with the task start\n",
      t, n, (n - c0) / (e - f), n - c0, e - f, n / (e - r) }'
  awk -v w0="$w0" -v w1="$w1" -v b0="$b0" -v b1="$b1" -v p0="$p0" -v p1="$p1" -v n="$N" 'BEGIN {
    w = w1 - w0; b = b1 - b0; p = p1 - p0
    printf "         CPU seconds: worker %.2f, broker %.2f, postgres %.2f (%.1f us of CPU per row in all)\n", w, b, p, (w + b + p) * 1e6 / n }'
  echo "         load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}
echo "PostgreSQL sink, insert.mode=upsert, batch.size=$BATCH, $N records, $(nproc) cores, $("$PGBIN/postgres" --version)"
round new    # upserts into an empty table
round update # upserts over the existing rows
echo "rows in the table: $(psql 'SELECT count(*) FROM bench')"
