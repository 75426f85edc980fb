#!/bin/bash
cd /work/main
L=./target/release/examples/load
B="--bin /tmp/pw-bench2"
run() { name=$1; shift; echo "### $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" > /tmp/final/$name.txt; $L "$@" $B >> /tmp/final/$name.txt 2>&1; }
run b-rate5000-redb-1 --events 25000 --rate 5000 --in-flight 32 --store redb
run b-rate5000-sled-1 --events 25000 --rate 5000 --in-flight 32 --store sled
run b-rate5000-redb-2 --events 25000 --rate 5000 --in-flight 32 --store redb
run b-rate5000-sled-2 --events 25000 --rate 5000 --in-flight 32 --store sled
run b-flat100-redb --events 20000 --batch 100 --in-flight 32 --store redb
run b-flat100-sled --events 20000 --batch 100 --in-flight 32 --store sled
run b-rate1000-redb --events 10000 --rate 1000 --in-flight 32 --store redb
echo done > /tmp/final/DONE3
