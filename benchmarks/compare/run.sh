#!/usr/bin/env bash
# Runs unitscale's benchmarks and their PyTorch counterparts one after the other in one session
# with the same thread count, and prints both. See README.md.
#
#   benchmarks/compare/run.sh [linear|train|all] [extra Google Benchmark flags]
#
#   linear  a unit-scaled linear layer's forward + backward (1024 tokens, 1024 -> 1024):
#           bench_gemm --benchmark_filter=linear (raw oneDNN as the baseline), then linear_torch.py
#   train   one training step (forward + backward + AdamW) of the byte-level decoder at widths 64,
#           256 and 1024: bench_train, then train_step_torch.py, then both summaries side by side
#   all     both (the default)
#
# Extra flags (e.g. --benchmark_repetitions=3) go to the unitscale programs.
# Environment: THREADS (default: OMP_NUM_THREADS, else 2), BENCH_GEMM and BENCH_TRAIN (default:
# build/release/benchmarks/bench_gemm, .../bench_train), PYTHON (default: the first of
# /opt/venv-compare/bin/python, /work/venv-compare/bin/python and python3 that can import torch),
# TORCH_TRAIN_FLAGS (extra train_step_torch.py flags, e.g. "--optimizer foreach").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
what=all
case "${1:-}" in
  linear | train | all) what="$1"; shift ;;
esac
threads="${THREADS:-${OMP_NUM_THREADS:-2}}"
export OMP_NUM_THREADS="$threads"

need_bench() {
  if [[ ! -x "$1" ]]; then
    echo "run.sh: $1 not found; build it first:" >&2
    echo "  cmake --preset release && cmake --build --preset release --target $(basename "$1")" >&2
    exit 1
  fi
}
bench_gemm="${BENCH_GEMM:-$root/build/release/benchmarks/bench_gemm}"
bench_train="${BENCH_TRAIN:-$root/build/release/benchmarks/bench_train}"
[[ "$what" == train ]] || need_bench "$bench_gemm"
[[ "$what" == linear ]] || need_bench "$bench_train"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in /opt/venv-compare/bin/python /work/venv-compare/bin/python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
      python="$candidate"
      break
    fi
  done
fi
if [[ -z "$python" ]]; then
  echo "run.sh: no Python with PyTorch found (set PYTHON=...); see benchmarks/compare/README.md" >&2
  exit 1
fi

echo "machine: $(getconf _NPROCESSORS_ONLN) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S) UTC"

if [[ "$what" != train ]]; then
  echo "== unitscale: $bench_gemm --benchmark_filter=linear (OMP_NUM_THREADS=$threads) =="
  "$bench_gemm" --benchmark_filter=linear "$@"
  echo
  echo "== PyTorch: $python benchmarks/compare/linear_torch.py --threads $threads =="
  "$python" "$root/benchmarks/compare/linear_torch.py" --threads "$threads"
  echo
fi

if [[ "$what" != linear ]]; then
  ours="$(mktemp)"
  theirs="$(mktemp)"
  trap 'rm -f "$ours" "$theirs"' EXIT
  echo "== unitscale: $bench_train (OMP_NUM_THREADS=$threads) =="
  "$bench_train" "$@" | tee "$ours"
  echo
  # shellcheck disable=SC2086  # TORCH_TRAIN_FLAGS is a list of flags
  echo "== PyTorch: $python benchmarks/compare/train_step_torch.py --threads $threads ${TORCH_TRAIN_FLAGS:-} =="
  # shellcheck disable=SC2086
  "$python" "$root/benchmarks/compare/train_step_torch.py" --threads "$threads" \
    ${TORCH_TRAIN_FLAGS:-} | tee "$theirs"
  echo
  echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== Training step side by side: tokens/s (higher is better), rss growth in MiB =="
  # Both summaries start with a "width" header line; ours has the columns width params gemm_only
  # umup_step sp_step umup_fwd umup/sp gemm_share GFLOP/s arena_MiB rss_grow_MiB, PyTorch's
  # width params torch_step torch_fwd GFLOP/s peak_rss_MiB rss_grow_MiB.
  awk '
    FNR == 1 { file++; in_table = 0 }
    $1 == "width" { in_table = 1; next }
    in_table && $1 ~ /^[0-9]+$/ {
      if (file == 1) { ustep[$1] = $4; sp[$1] = $5; ufwd[$1] = $6; gshare[$1] = $8; ugrow[$1] = $11; params[$1] = $2; order[++n] = $1 }
      else { tstep[$1] = $3; tfwd[$1] = $4; tgrow[$1] = $7 }
      next
    }
    in_table { in_table = 0 }
    END {
      printf "%-6s %8s %11s %11s %11s %10s %11s %11s %9s %9s %9s\n", "width", "params", "umup_step", "sp_step", "torch_step", "umup/torch", "umup_fwd", "torch_fwd", "gemm_shr", "rss_ours", "rss_torch"
      for (i = 1; i <= n; i++) {
        w = order[i]
        ratio = (tstep[w] > 0) ? ustep[w] / tstep[w] : 0
        printf "%-6s %8s %11s %11s %11s %10.2f %11s %11s %9s %9s %9s\n", w, params[w], ustep[w], sp[w], tstep[w], ratio, ufwd[w], tfwd[w], gshare[w], ugrow[w], tgrow[w]
      }
    }' "$ours" "$theirs"
fi
