#!/bin/sh
# From a folder of labelled photos to a trained model, with the command line only.
#   sh examples/photo_classifier/train_and_predict.sh [DATA_DIR] [EPOCHS] [IMAGE_SIZE]
# Without DATA_DIR, real Fashion-MNIST photos are written into ./fashion_photos first.
# Needs: pip install "edgecore[images]" (Pillow).  Run from anywhere; writes into the
# current directory: clothes.h5 and clothes.labels.txt.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DATA=${1:-}
EPOCHS=${2:-5}
SIZE=${3:-96}
PYTHON=${PYTHON:-python3}
if [ -z "$DATA" ]; then
    "$PYTHON" "$HERE/photo_classifier.py" --write-only --per-class "${PER_CLASS:-100}"
    DATA=fashion_photos
fi
edgecore train "$REPO/weights/pretrained/mobilenet_v2_imagenet.h5" "$DATA" \
    --out clothes.h5 --epochs "$EPOCHS" --image-size "$SIZE" --validation-split 0.2
# The first photo of each class (the labels come from clothes.labels.txt).
set --
for class in "$DATA"/*/; do
    set -- "$@" "$(ls "$class"* | head -n 1)"
done
edgecore predict clothes.h5 "$@" --top 2
