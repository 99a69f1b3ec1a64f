#!/usr/bin/env bash
# Builds and runs the demo program; arguments go to the program.
#
#   scripts/demo.sh [program arguments...]
set -euo pipefail

# The example the demo runs (a target in examples/).
target=01_formats
preset=release

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh

# Configure quietly: its log is only worth reading when it fails.
log=build/demo-configure.log
mkdir -p build
if ! cmake --preset "$preset" >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
cmake --build --preset "$preset" --target "$target"

exec "build/$preset/examples/$target" "$@"
