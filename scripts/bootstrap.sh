#!/usr/bin/env bash
# Installs the Debian packages unitscale needs to build, test and benchmark, plus any package
# names given as arguments (for example data packages that an example reads):
#
#   scripts/bootstrap.sh [extra-package...]
#
# Idempotent and quiet: when everything is installed it prints nothing and touches nothing.
# Otherwise it runs `apt-get update` once, installs what is missing and prints one line.
set -euo pipefail

packages=(
  cmake
  ninja-build
  g++
  pkg-config
  libeigen3-dev
  libfmt-dev
  libgtest-dev
  libbenchmark-dev
  libdnnl-dev
  ocl-icd-opencl-dev  # Debian's oneDNN is built with its GPU runtime; its CMake config finds OpenCL
  libopenblas-dev
  zlib1g-dev          # gzipped IDX datasets (io/idx.hpp)
  nlohmann-json3-dev  # checkpoint headers, metrics and configs as JSON
  libopenmpi-dev      # data-parallel training (the optional MPI component) and its tests
  openmpi-bin         # mpirun
  # The fuzz preset: clang, its libFuzzer and sanitizer runtimes, and its OpenMP runtime
  clang-14
  libclang-rt-14-dev
  libomp-14-dev
  "$@"
)

missing=()
for pkg in "${packages[@]}"; do
  # dpkg-query prints one status per installed architecture; any "install ok installed" will do.
  status=$(dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null || true)
  if [[ $status != *"install ok installed"* && " ${missing[*]} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
((${#missing[@]} == 0)) && exit 0

as_root=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "bootstrap: missing packages (${missing[*]}) and not root and no sudo" >&2
    exit 1
  fi
  as_root=(sudo)
fi

# apt is chatty even with -qq (dpkg prints every unpacked package), so keep its output in a log
# and show it only when something fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {
  if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: 'apt-get $*' failed" >&2
    exit 1
  fi
}
apt update -qq
apt install -y -qq --no-install-recommends "${missing[@]}"
echo "bootstrap: installed ${missing[*]}"
