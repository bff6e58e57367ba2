#!/bin/sh
# Build pxc and run every test under ctest.
set -e
cd "$(dirname "$0")/.."
sh scripts/build.sh
cd build && ctest --output-on-failure -j"$(nproc)" "$@"
