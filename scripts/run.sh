#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains AlexNet on Fashion-MNIST
# (Debian's dataset-fashion-mnist) with the built-in defaults (a fresh run each time:
# OUT/checkpoint.pth is replaced), evaluates the result, draws the training curves, and
# classifies a few Fashion-MNIST test images written out as PNG files.
# Usage: scripts/run.sh [alexnet train flags...]   (e.g. --epochs 1, --output DIR)
#        ALEXNET_LIBTORCH=debian|pypi scripts/run.sh   (the LibTorch to build against; see below)
set -euo pipefail
source "$(dirname "$0")/common.sh"

# Debian's LibTorch 1.13 by default: side by side (BENCHMARKS.md, "Two LibTorch flavours side
# by side") it runs this job 1.09x faster end to end than PyPI's 2.15 (the step alone runs at
# the same speed), and it needs no 5 GB download of PyPI's CUDA build.
ALEXNET_LIBTORCH=${ALEXNET_LIBTORCH:-debian}

install_packages "${ALEXNET_BUILD_PACKAGES[@]}" dataset-fashion-mnist python3-matplotlib ccache
use_libtorch "$ALEXNET_LIBTORCH"
build
why="the default: it runs this job 1.09x faster than PyPI's 2.15 and needs no 5 GB download (BENCHMARKS.md)"
[ "$ALEXNET_LIBTORCH" = debian ] || why="chosen by ALEXNET_LIBTORCH"
log "LibTorch flavour '$ALEXNET_LIBTORCH', $why: $("$ALEXNET_BUILD/app/alexnet" --version)"

alexnet=$ALEXNET_BUILD/app/alexnet
out=$ALEXNET_ROOT/out
# Flags of the training run that evaluation must repeat: the output folder, the data, the input size.
eval_args=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  next=${args[$((i + 1))]:-}
  case "${args[$i]}" in
    -o|--output) out=$next ;;
    --data|--image-size) eval_args+=("${args[$i]}" "$next") ;;
  esac
done

log "training: alexnet train --output $out --overwrite $*"
"$alexnet" train --output "$out" --overwrite "$@"
log "evaluating $out/model.pth"
"$alexnet" eval --weights "$out/model.pth" "${eval_args[@]}"
/usr/bin/python3 "$ALEXNET_ROOT/scripts/plot_metrics.py" "$out/metrics.jsonl" --output "$out/curves.png"
# The weights on real pictures: Fashion-MNIST test images as PNG files. model.pth carries the
# class names and the input transform, so predict needs no other flag.
if [[ " ${eval_args[*]} " != *" --data "* ]]; then
  /usr/bin/python3 "$ALEXNET_ROOT/scripts/fashion_mnist_pngs.py" --count 6 --output "$out/samples"
  log "predicting: alexnet predict --weights $out/model.pth --topk 2 $out/samples"
  "$alexnet" predict --weights "$out/model.pth" --topk 2 "$out/samples"
fi
