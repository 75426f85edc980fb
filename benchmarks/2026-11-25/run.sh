#!/bin/bash
# Run from anywhere: the repository root is two folders up. BIN is the
# pushwerk binary to measure (default: the release build), OUT where the
# outputs go (default: this folder).
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/2026-11-25}"
L=./target/release/examples/load
B="--bin ${BIN:-target/release/pushwerk}"
run() { name=$1; shift; echo "### $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" > $OUT/$name.txt; $L "$@" $B >> $OUT/$name.txt 2>&1; }
run flat100-sled --events 20000 --batch 100 --in-flight 32 --store sled
run flat100-redb --events 20000 --batch 100 --in-flight 32 --store redb
run flat1-redb --events 20000 --in-flight 32 --store redb
run flat1-sled --events 20000 --in-flight 32 --store sled
run rate5000-redb --events 25000 --rate 5000 --in-flight 32 --store redb
run rate5000-sled --events 25000 --rate 5000 --in-flight 32 --store sled
run rate5000b10-redb --events 25000 --rate 5000 --batch 10 --in-flight 32 --store redb
run rate1000-redb --events 10000 --rate 1000 --in-flight 32 --store redb
run graphcap-redb --events 20000 --batch 100 --store redb
run http-redb --events 20000 --batch 100 --target http --in-flight 32 --store redb
run storm-sled --token-storm --store sled
run storm-redb --token-storm --store redb
run soak-redb-60s --soak 1000000 --batch 50 --rate 5000 --in-flight 32 --store redb --serve-arg=--event-window=60s
run soak-sled-60s --soak 1000000 --batch 50 --rate 5000 --in-flight 32 --store sled --serve-arg=--event-window=60s
run soak-redb-7d --soak 1000000 --batch 50 --rate 5000 --in-flight 32 --store redb
echo done > $OUT/DONE
