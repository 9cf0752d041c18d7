#!/usr/bin/env bash
# The whole test suite: a real tritonserver with tiny models, and the plugin
# driven through the daemon's stdio protocol from its built package.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv-server/bin/python -m pytest "$@"
