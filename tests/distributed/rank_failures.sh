#!/usr/bin/env bash
# What data-parallel unitscale-train does when a rank fails, under mpirun -np 2: each failure must
# end the whole job with a clear error within seconds, never hang.
#   1. ranks started with different settings: every rank names the difference;
#   2. a rank that stops responding (SIGSTOP): the other's collective times out and aborts the job;
#   3. a rank that dies (SIGKILL): mpirun ends the job.
#
#   rank_failures.sh UNITSCALE_TRAIN MPIRUN
set -uo pipefail
train=${1:?"usage: rank_failures.sh UNITSCALE_TRAIN MPIRUN"}
mpirun=${2:?"usage: rank_failures.sh UNITSCALE_TRAIN MPIRUN"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

work=$(mktemp -d)
launcher=
# The pids of this script's unitscale-train processes (their command lines name $work), from
# /proc: no procps needed.
our_ranks() {
  local dir
  for dir in /proc/[0-9]*; do
    if tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | grep -q -- "--data $work/text.txt"; then
      echo "${dir#/proc/}"
    fi
  done
}
cleanup() {
  [[ -n $launcher ]] && kill -KILL "$launcher" 2>/dev/null
  for pid in $(our_ranks); do kill -KILL "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  echo "----- output -----"
  cat "$work/out"
  exit 1
}

# Periodic text: the tests never read the Debian fortunes.
yes "0123456789" | head -c 20000 >"$work/text.txt"
common=(--width 32 --depth 1 --heads 1 --seq 16 --batch 4 --warmup 0 --progress quiet --sample 0
        --threads 1 --data "$work/text.txt")

# The pid of rank $1 of the running job, once it exists (empty after 30 s).
rank_pid() {
  for _ in $(seq 300); do
    for pid in $(our_ranks); do
      if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
        echo "$pid"
        return
      fi
    done
    sleep 0.1
  done
}

# Waits for the background launcher at most $1 seconds; sets `status` (124 if it had to be killed).
wait_launcher() {
  for _ in $(seq $(($1 * 10))); do
    if ! kill -0 "$launcher" 2>/dev/null; then
      wait "$launcher"
      status=$?
      launcher=
      return
    fi
    sleep 0.1
  done
  kill -KILL "$launcher"
  wait "$launcher"
  launcher=
  status=124
}

echo "1. different settings on the two ranks"
timeout 120 "$mpirun" --oversubscribe -np 1 "$train" "${common[@]}" --steps 5 \
  : -np 1 "$train" "${common[@]}" --steps 5 --width 64 >"$work/out" 2>&1
status=$?
((status != 0 && status != 124)) || fail "the job exited with status $status"
for rank in 0 1; do
  grep -q "(rank $rank of 2): Trainer: the data-parallel ranks were started with different" \
    "$work/out" || fail "rank $rank did not report the difference"
done
grep -q 'task.model: rank 0 has' "$work/out" || fail "the message does not name the setting"

echo "2. a rank stops responding"
"$mpirun" --oversubscribe -np 2 "$train" "${common[@]}" --steps 100000000 \
  --collective-timeout 3 >"$work/out" 2>&1 &
launcher=$!
pid=$(rank_pid 1)
[[ -n $pid ]] || fail "rank 1 never started"
sleep 1  # into the training loop
kill -STOP "$pid"
wait_launcher 60
((status != 0 && status != 124)) || fail "the job exited with status $status"
grep -q "rank 0 of 2: .* did not complete within 3 s. Another rank has died" "$work/out" ||
  fail "rank 0 did not report the timeout"

echo "3. a rank dies"
"$mpirun" --oversubscribe -np 2 "$train" "${common[@]}" --steps 100000000 >"$work/out" 2>&1 &
launcher=$!
pid=$(rank_pid 1)
[[ -n $pid ]] || fail "rank 1 never started"
sleep 1
kill -KILL "$pid"
wait_launcher 60
((status != 0 && status != 124)) || fail "the job exited with status $status"
grep -qi "signal 9" "$work/out" || fail "mpirun did not report the killed rank"
echo "all rank failures ended the job with an error"
