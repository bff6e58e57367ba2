#!/bin/sh
# The main job: build pxc, train models/fashion_mnist.yaml on Fashion-MNIST
# for about ten minutes, report the test bits/dim and write a sample grid.
# Running it again continues the same run for another ten minutes.
#
# Settings (environment): PXC_TIME (training seconds, 600), PXC_RUN (run
# directory, runs/demo), PXC_DATA (data set, Debian's dataset-fashion-mnist),
# PXC_BACKEND (auto: the fastest back end built into pxc; that choice is
# made in one place, rt_build_model in runtime/train.c), PXC_SAMPLES (images
# in the grid, 16), PXC_EVAL_IMAGES (test images evaluated; all).
set -e
cd "$(dirname "$0")/.."
sh scripts/build.sh

PXC=./build/pxc
SPEC=models/fashion_mnist.yaml
DATA=${PXC_DATA:-/usr/share/datasets/fashion-mnist}
RUN=${PXC_RUN:-runs/demo}
TIME=${PXC_TIME:-600}
BACKEND=${PXC_BACKEND:-auto}

RESUME=""
if ls "$RUN"/ckpt-*.safetensors >/dev/null 2>&1; then
  RESUME=--resume
  echo "demo: continuing the run in $RUN"
fi

# Check the spec and the data and see which back end runs them. The
# reference back end is exact but far slower than the compiled one (about a
# second per image and step for this model): on it, evaluate on the first
# 500 test images and draw one sample, so the demo ends within about ten
# minutes of its training time.
PLAN=$($PXC train $SPEC --data "$DATA" --out "$RUN" --backend "$BACKEND" --dry-run $RESUME 2>&1) || {
  echo "$PLAN" >&2
  exit 1
}
EVAL_IMAGES=${PXC_EVAL_IMAGES:-}
NSAMPLES=${PXC_SAMPLES:-16}
if echo "$PLAN" | grep -q "on the ref back end"; then
  EVAL_IMAGES=${PXC_EVAL_IMAGES:-500}
  NSAMPLES=${PXC_SAMPLES:-1}
  echo "demo: the compiled back end is not available; the reference back end (slow) evaluates"
  echo "      the first $EVAL_IMAGES test images and draws $NSAMPLES sample(s)"
fi
EVAL_LIMIT=""
[ -n "$EVAL_IMAGES" ] && EVAL_LIMIT="--eval-images $EVAL_IMAGES"

$PXC train $SPEC --data "$DATA" --out "$RUN" --backend "$BACKEND" --time "$TIME" \
  --eval-every -1 $EVAL_LIMIT $RESUME

$PXC sample $SPEC --checkpoint "$RUN" --backend "$BACKEND" -n $NSAMPLES -o "$RUN/samples.png"
echo "demo: metrics in $RUN/metrics.jsonl, samples in $RUN/samples.png"
