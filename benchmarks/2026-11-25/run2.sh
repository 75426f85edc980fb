#!/bin/bash
# Run from anywhere: the repository root is two folders up. BIN is the
# pushwerk binary to measure (default: the release build), OUT where the
# outputs go (default: this folder).
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/2026-11-25}"
L=./target/release/examples/load
B="--bin ${BIN:-target/release/pushwerk}"
run() { name=$1; shift; echo "### $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" > $OUT/$name.txt; $L "$@" $B >> $OUT/$name.txt 2>&1; }
run b-rate5000-redb-1 --events 25000 --rate 5000 --in-flight 32 --store redb
run b-rate5000-sled-1 --events 25000 --rate 5000 --in-flight 32 --store sled
run b-rate5000-redb-2 --events 25000 --rate 5000 --in-flight 32 --store redb
run b-rate5000-sled-2 --events 25000 --rate 5000 --in-flight 32 --store sled
run b-flat100-redb --events 20000 --batch 100 --in-flight 32 --store redb
run b-flat100-sled --events 20000 --batch 100 --in-flight 32 --store sled
run b-rate1000-redb --events 10000 --rate 1000 --in-flight 32 --store redb
echo done > $OUT/DONE3
