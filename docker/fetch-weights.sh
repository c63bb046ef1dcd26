#!/bin/sh
# Download a Hugging Face checkpoint once into a local folder: WEIGHTS_REPO (a repo id) into
# WEIGHTS_DIR, without Meta's original/ consolidated copy. The Llama 3 configs load their weights
# from such a folder (/models/Meta-Llama-3-8B-Instruct): LoRA uploads are checked against its
# safetensors headers. Gated repos need HF_TOKEN. Once a download has finished, a marker file says
# so and later runs fetch nothing, so that a restart needs no network.
# Used by docker/compose.gpu.yaml's `weights` service and deploy/kubernetes' `weights` init container.
set -eu
: "${WEIGHTS_REPO:?set WEIGHTS_REPO to a Hugging Face repo id}"
: "${WEIGHTS_DIR:?set WEIGHTS_DIR to the folder the config's weights.path names}"
done_marker="$WEIGHTS_DIR/.wai-download-complete"
if [ -f "$done_marker" ]; then
  echo "weights: $WEIGHTS_DIR is complete"
  exit 0
fi
echo "weights: downloading $WEIGHTS_REPO into $WEIGHTS_DIR"
python3 - <<'PY'
import os

from huggingface_hub import snapshot_download

snapshot_download(os.environ["WEIGHTS_REPO"], local_dir=os.environ["WEIGHTS_DIR"], ignore_patterns=["original/*"])
PY
touch "$done_marker"
echo "weights: $WEIGHTS_DIR is complete"
