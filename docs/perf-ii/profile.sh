#!/bin/bash
# Profile one gateway under the stream lane's load at C=512 (64 deltas 20 ms apart).
# usage: run.sh sluice|vllm-router
set -u
. "$(dirname "$(realpath "$0")")/bench-config.sh"
WHO=$1
OUT=${OUT:-/work/bench-out/profile}; mkdir -p "$OUT"
B=${BENCH:-${CARGO_TARGET_DIR:-target}/release/sluice-bench}
S=${SLUICE:-${CARGO_TARGET_DIR:-target}/release/sluice}
B=$(realpath "$B"); S=$(realpath "$S")
cd $OUT
$B mock-upstream --addr 127.0.0.1:18001 > $OUT/mock-$WHO.log 2>&1 &
MOCK=$!
write_config 18001 $OUT/sluice.toml
ulimit -n 20000
sleep 1
if [ "$WHO" = sluice ]; then
  SLUICE_DEMO=off $S --config $OUT/sluice.toml --addr 127.0.0.1:18002 > $OUT/gw-$WHO.out 2> $OUT/gw-$WHO.log &
  GW=$!; KEYARG="--key $KEY"
else
  vllm-router --host 127.0.0.1 --port 18002 --worker-urls http://127.0.0.1:18001 --policy round_robin --health-check-endpoint /healthz --worker-startup-check-interval 1 > $OUT/gw-$WHO.out 2> $OUT/gw-$WHO.log &
  GW=$!; KEYARG=""
fi
for i in $(seq 1 60); do curl -s -o /dev/null http://127.0.0.1:18002/ && break; sleep 0.5; done
$B load --url http://127.0.0.1:18002 $KEYARG --concurrency 512 --tokens 64 --delay-ms 20 --duration 18 --ramp-secs 1.28 --pid $WHO=$GW --name $WHO > $OUT/load-$WHO.txt 2>&1 &
LOAD=$!
sleep 3.5
perf stat -e context-switches,cpu-clock,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex -p $GW -- sleep 6 2> $OUT/stat-$WHO.txt
perf record -g -o $OUT/perf-$WHO.data -p $GW -- sleep 6 2> $OUT/record-$WHO.log
wait $LOAD
kill $GW $MOCK
wait 2>/dev/null
perf report -i $OUT/perf-$WHO.data --no-children --stdio --percent-limit 0.5 -g none 2>/dev/null | grep -v '^$' | head -60 > $OUT/report-$WHO.txt
echo done $WHO
