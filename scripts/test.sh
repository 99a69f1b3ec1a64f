#!/usr/bin/env bash
# Installs what is missing, then configures, builds and tests unitscale with one CMake preset.
#
#   scripts/test.sh [--preset NAME] [ctest arguments...]
#
# NAME is a preset from CMakePresets.json (release by default; dev, asan-ubsan). Everything else
# goes to ctest, e.g. `scripts/test.sh -L unit` or `scripts/test.sh --preset dev -R Float8`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

preset=release
ctest_args=()
while (($#)); do
  case $1 in
    --preset)
      preset=${2:?"--preset needs a name"}
      shift 2
      ;;
    --preset=*)
      preset=${1#--preset=}
      shift
      ;;
    *)
      ctest_args+=("$1")
      shift
      ;;
  esac
done

step() { printf '\n===== %s =====\n' "$*"; }

step "bootstrap: Debian packages"
bash scripts/bootstrap.sh

step "configure (preset $preset)"
cmake --preset "$preset"

step "build (preset $preset)"
cmake --build --preset "$preset" --parallel "$(nproc)"

step "test (preset $preset)"
ctest --preset "$preset" "${ctest_args[@]}"
