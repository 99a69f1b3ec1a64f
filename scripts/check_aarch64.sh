#!/usr/bin/env bash
# Checks that every library source compiles for aarch64 (the portable build: no x86 SIMD), with
# Debian's cross compiler, without building or running anything. The headers of Eigen, fmt and
# oneDNN are architecture-independent, so the host's copies serve.
#
#   scripts/check_aarch64.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh g++-aarch64-linux-gnu

# Only the library's dependencies from /usr/include, not the host's C library headers.
includes=$(mktemp -d)
trap 'rm -rf "$includes"' EXIT
ln -s /usr/include/fmt "$includes/fmt"
ln -s /usr/include/oneapi "$includes/oneapi"

failed=0
count=0
while IFS= read -r source; do
  count=$((count + 1))
  if ! aarch64-linux-gnu-g++ -std=c++20 -fopenmp -fsyntax-only -Wall -Wextra -Iinclude -Isrc \
      -I/usr/include/eigen3 -I"$includes" -DUNITSCALE_X86_SIMD=0 "$source"; then
    echo "check_aarch64: $source does not compile for aarch64" >&2
    failed=$((failed + 1))
  fi
done < <(find src -name '*.cpp' | sort)
echo "check_aarch64: $((count - failed)) of $count sources compile for aarch64"
((failed == 0))
