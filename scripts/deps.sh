#!/bin/sh
# Install the Debian 12 packages pxc needs, if any is missing. Runs as root
# (or through sudo when available). Safe to run again.
set -e
pkgs="build-essential cmake pkg-config libyaml-dev llvm-14-dev libopenblas-dev libpng-dev zlib1g-dev
      libcjson-dev libcmocka-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin"
[ -n "$PXC_WITH_TORCH" ] && pkgs="$pkgs python3-torch python3-numpy"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "pxc: installing missing packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
