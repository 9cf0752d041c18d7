"""Where the repository, the server requirements and the launcher's default work dir are."""

from __future__ import annotations

from pathlib import Path

# The repository root: on the models' PYTHONPATH so that model.py files can
# `import tritonmm` and `import tritonmm_server`.
REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "tritonmm_server" / "requirements.txt"
DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
DEFAULT_WORK_DIR = REPO_ROOT / ".cache" / "triton"
