#!/usr/bin/env bash
# The flagship demo: trains a small u-muP byte-level transformer on the Debian fortunes with the
# library's default hyperparameters (about three minutes on two cores), with a progress bar,
# evaluation, checkpoints, metrics and a loss curve, then prints text the model wrote.
#
#   scripts/demo.sh                    # the demo; output in build/demo/
#   scripts/demo.sh --smoke            # a 20-step version (seconds), as the test suite runs it
#   scripts/demo.sh --steps 2000 ...   # anything else goes to unitscale-train (see --help)
#
# It installs what it needs (build tools, libraries and the `fortunes` package), configures and
# builds the release preset, and runs build/release/tools/unitscale-train.
set -euo pipefail

preset=release
out=build/demo

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh fortunes

# Configure quietly: its log is only worth reading when it fails.
log=build/demo-configure.log
mkdir -p build
if ! cmake --preset "$preset" >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
cmake --build --preset "$preset" --target unitscale-train

# The demo's run: u-muP at its default eta = 1 (no tuning; the depth sweep in docs/results.md
# finds 1 optimal at depth 8), width 128, depth 8, 1800 steps of 16 x 64 bytes with 180 warmup
# steps and a cosine decay, evaluated on the whole validation split every 300 steps. A fresh run
# each time (a previous one is moved aside, not deleted).
defaults=(--scheme umup --width 128 --depth 8 --seq 64 --batch 16 --steps 1800 --warmup 180
          --eval-every 300 --checkpoint-every 300 --out "$out" --sample 400 --prompt "Q: ")
args=()
for arg in "$@"; do
  if [[ $arg == --smoke ]]; then
    args+=(--steps 20 --warmup 5 --eval-every 10 --checkpoint-every 10 --sample 60)
  else
    args+=("$arg")
  fi
done
if [[ -d $out ]]; then
  rm -rf "$out.previous"
  mv "$out" "$out.previous"
fi
exec "build/$preset/tools/unitscale-train" "${defaults[@]}" "${args[@]}"
