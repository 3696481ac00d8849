#!/bin/bash
# Instructions (user space, callgrind) per streamed frame of a gateway: two runs, 4 s and 12 s of
# load at C=16 (64 deltas 20 ms apart); the difference over the difference in frames.
# (vllm-router runs under its Python: a fixed start-up cost, which the difference removes).
# usage: instructions.sh label path/to/sluice|vllm ; prints instructions per stream and frame
# Deterministic (instruction counts, not time), so two binaries can be compared on a busy
# machine; it does not see the kernel (syscalls per frame: perf stat, see profile.sh).
set -u
. "$(dirname "$(realpath "$0")")/bench-config.sh"
label=$1; bin=$2; C=${C:-16}
OUT=${OUT:-/tmp/sluice-instructions}/$label; mkdir -p $OUT
B=$(realpath ${BENCH:-${CARGO_TARGET_DIR:-target}/release/sluice-bench})
PORTM=$((18400 + RANDOM % 50)); PORTG=$((PORTM + 50))
$B mock-upstream --addr 127.0.0.1:$PORTM > $OUT/mock.log 2>&1 &
MOCK=$!
write_config $PORTM $OUT/sluice.toml
PY=$(python3 -c "import sys; print(sys.executable)")
ulimit -n 20000; sleep 0.5
rm -f $OUT/runs
for secs in ${DURS:-4 12}; do
  if [ "$bin" = vllm ]; then
    valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$secs --dump-instr=no $PY $(dirname $PY)/vllm-router --host 127.0.0.1 --port $PORTG --worker-urls http://127.0.0.1:$PORTM --policy round_robin --health-check-endpoint /healthz --worker-startup-check-interval 1 > $OUT/gw.$secs.log 2>&1 &
    GW=$!; KEYARG=""
  else
    SLUICE_DEMO=off valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.$secs --dump-instr=no $bin --config $OUT/sluice.toml --addr 127.0.0.1:$PORTG > $OUT/gw.$secs.log 2>&1 &
    GW=$!; KEYARG="--key $KEY"
  fi
  for i in $(seq 1 240); do curl -s -o /dev/null http://127.0.0.1:$PORTG/ && break; sleep 0.5; done
  sleep 1
  # Counted from here: what the process did to start (allocator and runtime set-up, clock
  # calibration, the first requests' lazy statics) varies by millions of instructions from one
  # start to the next under valgrind, more than the difference of the two runs can remove.
  callgrind_control -z $GW > /dev/null 2>&1
  $B load --url http://127.0.0.1:$PORTG $KEYARG --concurrency $C --tokens ${TOKENS:-64} --delay-ms 20 --duration $secs --ramp-secs 1.28 --name $label > $OUT/load.$secs.txt 2>&1
  sleep 1
  kill -INT $GW; wait $GW 2>/dev/null
  ok=$(grep -oE "ok [0-9]+" $OUT/load.$secs.txt | head -1 | awk '{print $2}')
  ir=$(grep -E "^(summary|totals):" $OUT/cg.$secs* | head -1 | awk '{print $2}')
  # quanta (governor's clock) calibrates the TSC once at start, in a loop that runs until the
  # clock is stable: under valgrind its length varies by millions of instructions from run to
  # run, which the difference does not remove. It is start-up work: left out.
  cal=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 $OUT/cg.$secs* 2>/dev/null \
    | grep -m1 'quanta::Calibration::calibrate ' | awk '{gsub(",", "", $1); print $1}')
  ir=$((ir - ${cal:-0}))
  echo "$label secs=$secs ok=$ok Ir=$ir"
  echo "$secs $ok $ir" >> $OUT/runs
done
kill $MOCK
awk -v l=$label 'NR==1{s1=$2;i1=$3} NR==2{s2=$2;i2=$3} END{printf "%s: %.0f instructions per stream, %.0f per frame (streams %d -> %d)\n", l, (i2-i1)/(s2-s1), (i2-i1)/(s2-s1)/'${TOKENS:-64}', s1, s2}' $OUT/runs
