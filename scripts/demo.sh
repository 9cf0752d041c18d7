#!/usr/bin/env bash
# The main job: set up, serve the bundled models on an embedded Triton, build the
# plugin package(s) into dist/, and stream an answer about a picture through the
# plugin. Extra arguments go to devtools.demo (e.g. --checkpoint chat=DIR, --keep-serving).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv-server/bin/python -m devtools.demo "$@"
