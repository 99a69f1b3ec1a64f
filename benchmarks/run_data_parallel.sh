#!/usr/bin/env bash
# The measurements of docs/distributed.md, in one session on this machine:
#   1. bench_data_parallel as 1 rank × 2 threads, 1 rank × 1 thread and 2 ranks × 1 thread
#      (step time per exchange format, bytes sent, exposed exchange time, the scale-out model);
#   2. the training-loss gap of each exchange format: unitscale-train on 2 ranks on the Debian
#      fortunes for a fixed number of steps, u-μP and SP (SP also with per-tensor scales).
#
#   benchmarks/run_data_parallel.sh [--steps N] [--out DIR]     # default 300 steps, build/dp
#
# It installs what it needs (scripts/bootstrap.sh fortunes) and builds the release preset.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

steps=300
out=build/dp
while (($#)); do
  case $1 in
    --steps) steps=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run_data_parallel.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done

bash scripts/bootstrap.sh fortunes
cmake --preset release >/dev/null
cmake --build --preset release --target bench_data_parallel unitscale-train >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe -np 2)
bench=build/release/benchmarks/bench_data_parallel
train=build/release/tools/unitscale-train
mkdir -p "$out"

echo "== 1 rank x 2 threads"
OMP_NUM_THREADS=2 "$bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true | tee "$out/bench_1x2.txt"
echo "== 1 rank x 1 thread"
OMP_NUM_THREADS=1 "$bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true | tee "$out/bench_1x1.txt"
echo "== 2 ranks x 1 thread"
OMP_NUM_THREADS=1 "${mpirun[@]}" "$bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true | tee "$out/bench_2x1.txt"

# The loss of each exchange format after $steps steps (width 128, depth 4, batch 16 x 64 bytes).
common=(--width 128 --depth 4 --seq 64 --batch 16 --steps "$steps" --warmup $((steps / 10))
        --eval-every 0 --progress quiet --sample 0 --threads 1 --checksum-every 50)
table="$out/loss_gap.md"
{
  echo "| scheme | exchange | final training loss | gap vs f32 | validation loss | underflow | saturated |"
  echo "|---|---|---|---|---|---|---|"
} >"$table"
for scheme in umup sp; do
  reference=
  for exchange in f32 bf16 f16 e5m2 e4m3 e5m2/per-tensor e4m3/per-tensor; do
    [[ $scheme == umup && $exchange == */per-tensor ]] && continue
    format=${exchange%%/*}
    scaling=unit
    [[ $exchange == */per-tensor ]] && scaling=per-tensor
    run="$out/loss_${scheme}_${format}_${scaling}"
    echo "== $scheme, exchange $exchange"
    "${mpirun[@]}" "$train" "${common[@]}" --scheme "$scheme" --exchange "$format" \
      --exchange-scaling "$scaling" --out "$run" | grep -E "after step|gradient exchange"
    # The mean training loss of the last 20 steps, the final validation loss and the mean
    # underflow and saturation fractions over the run, from metrics.csv.
    read -r loss validation underflow saturated < <(awk -F, 'NR > 1 {
        losses[NR] = $2; if ($3 != "") v = $3; u += $7; s += $8; n++ }
      END { t = 0; for (i = NR - 19; i <= NR; i++) t += losses[i];
            printf "%.4f %.4f %.3g %.3g\n", t / 20, v, u / n, s / n }' "$run/metrics.csv")
    [[ -z $reference ]] && reference=$loss
    gap=$(awk -v a="$loss" -v b="$reference" 'BEGIN { printf "%+.2f%%", 100 * (a - b) / b }')
    echo "| $scheme | $exchange | $loss | $gap | $validation | $underflow | $saturated |" >>"$table"
  done
done
echo
cat "$table"
