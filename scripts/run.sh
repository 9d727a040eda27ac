#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs AlexNet end to end.
# Today: export a seeded torchvision AlexNet and classify a photograph with it.
# Usage: scripts/run.sh [WEIGHTS] [IMAGE...]
set -euo pipefail
source "$(dirname "$0")/common.sh"

install_packages "${ALEXNET_BUILD_PACKAGES[@]}" python3-torch python3-torchvision opencv-doc
build

out=${ALEXNET_OUT:-$ALEXNET_ROOT/out}
mkdir -p "$out"
weights=${1:-$out/alexnet-seed0.pt}
if [ $# -lt 1 ] && [ ! -f "$weights" ]; then
  log "exporting torchvision's AlexNet with seeded random weights to $weights"
  /usr/bin/python3 "$ALEXNET_ROOT/scripts/export_torchvision.py" --seed 0 --output "$weights"
fi
shift $(( $# > 0 ? 1 : 0 )) || true
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(/usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg)
"$ALEXNET_BUILD/app/alexnet" predict --weights "$weights" --topk 5 "${images[@]}"
