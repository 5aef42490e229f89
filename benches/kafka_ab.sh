#!/usr/bin/env bash
# Builds of authwatch side by side on ONE loaded Kafka topic: `authwatch run --until-end` of each
# build in turn, ROUNDS times, next to `kcat -C > /dev/null` of the same topic, with each run's
# wall clock, CPU time and per-thread CPU (which stage is the ceiling). Not part of the test
# suite; `cargo bench --bench kafka` is the benchmark of record, this compares builds on exactly
# the same records (each run of that benchmark loads a topic of its own, and without record keys
# the split over the two partitions differs from load to load).
#
#   benches/kafka_ab.sh EVENTS ROUNDS BIN [BIN...]
#   benches/kafka_ab.sh 2000000 3 /tmp/authwatch-before target/release/authwatch
#
# Starts the development broker (scripts/kafka), generates the stream of the benchmark's shape
# with the first BIN (`gen --users 10000 --days EVENTS/50000+2 --seed 1`, cached in the work
# directory), loads it into a fresh 2-partition topic (kcat, lz4), then runs. Needs kcat.
# AUTHWATCH_BENCH_DIR sets the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
EVENTS="$1"; ROUNDS="$2"; shift 2
WORK="${AUTHWATCH_BENCH_DIR:-${TMPDIR:-/tmp}/authwatch-kafka-ab}"
mkdir -p "$WORK"
BROKERS="$(scripts/kafka start)"
STREAM="$WORK/events-$EVENTS.jsonl"
if [ ! -s "$STREAM" ]; then
  "$1" gen --users 10000 --days $((EVENTS / 50000 + 2)) --seed 1 --max-events "$EVENTS" \
    --out "$STREAM" 2>/dev/null
fi
TOPIC="ab-$(date +%s)"
scripts/kafka topic "$TOPIC" 2 >/dev/null
kcat -P -b "$BROKERS" -t "$TOPIC" -z lz4 -X linger.ms=20 -X batch.size=1000000 <"$STREAM"
GEO="$PWD/data/geo"

# CPU ticks per thread of process $1 until it exits; prints the largest and the total.
threads() {
  local pid="$1" t name stat
  declare -A ticks
  while [ -d "/proc/$pid" ]; do
    for t in /proc/"$pid"/task/*; do
      stat="$(cat "$t/stat" 2>/dev/null)" && name="$(cat "$t/comm" 2>/dev/null)" || continue
      # Fields after the parenthesised name: 12 and 13 are utime and stime.
      set -- ${stat##*) }
      ticks["$name/${t##*/}"]=$((${12} + ${13}))
    done
    sleep 0.2
  done
  for t in "${!ticks[@]}"; do echo "${ticks[$t]} $t"; done | sort -rn |
    awk -v hz="$(getconf CLK_TCK)" '{ s += $1; if (NR <= 8) printf "  %-24s %6.2f CPU-s\n", $2, $1 / hz }
      END { printf "  %-24s %6.2f CPU-s\n", "all threads", s / hz }'
}

for round in $(seq 1 "$ROUNDS"); do
  /usr/bin/time -f "round $round: kcat -C > /dev/null: %e s wall, %U+%S CPU-s" \
    kcat -C -b "$BROKERS" -t "$TOPIC" -o beginning -e -q >/dev/null
  for bin in "$@"; do
    name="$(basename "$bin")-$round"
    cat >"$WORK/$name.toml" <<EOF
[enrich.geo]
city_db = "$GEO/GeoIP2-City-Test.mmdb"
asn_db = "$GEO/GeoLite2-ASN-Test.mmdb"
anonymous_db = "$GEO/GeoIP2-Anonymous-IP-Test.mmdb"
[kafka]
brokers = "$BROKERS"
group_id = "$TOPIC.$name.group"
alert_topic = "$TOPIC.alerts"
dead_letter_topic = "$TOPIC.dead"
audit_topic = "$TOPIC.audit"
transactional_id = "$TOPIC.$name.tx"
[[kafka.topics]]
name = "$TOPIC"
format = "native"
[telemetry]
listen = "127.0.0.1:0"
[checkpoint]
dir = "$WORK/$name-checkpoints"
interval = "1s"
EOF
    start=$(date +%s.%N)
    AUTHWATCH_LOG=warn "$bin" run --until-end --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
    pid=$!
    threads "$pid" >"$WORK/$name.threads"
    wait "$pid"
    end=$(date +%s.%N)
    echo "round $round: $bin: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s wall;" \
      "$(grep -o 'stopped after.*' "$WORK/$name.log")"
    cat "$WORK/$name.threads"
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
