#!/usr/bin/env bash
# Create or update .venv-server (Python 3.11): the Triton server side (torch CPU,
# transformers, nvidia-pytriton) plus the build and test tools. Idempotent: a
# stamp of the requirement files skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv-server"
PY=${TMM_PYTHON311:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "bootstrap: Python 3.11 is required for the server side (the torch CPU wheel and the Triton python stub match it)" >&2
  exit 1
}
STAMP="$VENV/.tmm-requirements.sha256"
WANT=$(cat tritonmm_server/requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi
echo "bootstrap: installing the server and test environment into .venv-server (a few minutes the first time)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch first and alone: pinned to the CPU build so nothing pulls the CUDA wheels.
$PIP install "torch==2.13.0"
$PIP install -r tritonmm_server/requirements.txt -r requirements-dev.txt
# The python-backend stub embeds this venv's interpreter but ignores PYTHONPATH;
# a .pth file makes the repository's packages (tritonmm, tritonmm_server) importable in models.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$ROOT" > "$SITE/tritonmm_repo.pth"
echo "$WANT" > "$STAMP"
echo "bootstrap: done" >&2
