#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest).
# Usage: scripts/test.sh [CTEST_ARGS...]   e.g. scripts/test.sh -L unit
set -euo pipefail
source "$(dirname "$0")/common.sh"

# Reference tests run PyTorch/torchvision from Debian; opencv-doc has real photographs.
install_packages "${ALEXNET_BUILD_PACKAGES[@]}" python3-torch python3-torchvision python3-pil \
  python3-matplotlib clang libclang-rt-14-dev \
  opencv-doc dataset-fashion-mnist
build

cd "$ALEXNET_BUILD"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
