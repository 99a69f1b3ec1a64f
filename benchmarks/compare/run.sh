#!/usr/bin/env bash
# Times a unit-scaled linear layer's forward + backward (1024 tokens, 1024 -> 1024) in unitscale
# (bench_gemm's linear rows, with raw oneDNN as the baseline) and in PyTorch, one after the other
# in one session with the same thread count, and prints both. See README.md.
#
#   benchmarks/compare/run.sh [extra bench_gemm flags, e.g. --benchmark_repetitions=5]
#
# Environment: THREADS (default: OMP_NUM_THREADS, else 2), BENCH_GEMM (default:
# build/release/benchmarks/bench_gemm), PYTHON (default: /opt/venv-compare/bin/python if it can
# import torch, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bench="${BENCH_GEMM:-$root/build/release/benchmarks/bench_gemm}"
threads="${THREADS:-${OMP_NUM_THREADS:-2}}"
export OMP_NUM_THREADS="$threads"

if [[ ! -x "$bench" ]]; then
  echo "run.sh: $bench not found; build it first:" >&2
  echo "  cmake --preset release && cmake --build --preset release --target bench_gemm" >&2
  exit 1
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in /opt/venv-compare/bin/python python3; do
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

echo "== unitscale: $bench --benchmark_filter=linear (OMP_NUM_THREADS=$threads) =="
"$bench" --benchmark_filter=linear "$@"
echo
echo "== PyTorch: $python benchmarks/compare/linear_torch.py --threads $threads =="
"$python" "$root/benchmarks/compare/linear_torch.py" --threads "$threads"
