#!/bin/sh
# Configure and build pxc into ./build (Release-with-debug-info).
set -e
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo ${PXC_CMAKE_FLAGS:-} >/dev/null
cmake --build build -j"$(nproc)"
