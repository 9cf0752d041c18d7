"""Download a checkpoint from the Hugging Face hub (the launcher's ``fetch`` command)."""

from __future__ import annotations

from pathlib import Path


class FetchError(RuntimeError):
    """The hub could not be reached, or the repository is gated or missing; worded for the user."""


def fetch_checkpoint(repo_id: str, dest: Path, timeout: float = 10.0) -> Path:
    """Download ``repo_id`` from the Hugging Face hub into ``dest`` (with progress bars); returns the dir.

    A metadata request with a short timeout goes first, so a machine without hub
    access fails in seconds with a clear message instead of retrying per file.
    """
    try:
        from huggingface_hub import HfApi, constants, snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError as exc:
        raise FetchError("huggingface_hub is not installed: pip install -r tritonmm_server/requirements.txt") from exc
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError as exc:
        raise FetchError(f"{repo_id} is gated: accept its licence on the hub and log in (`hf auth login`)") from exc
    except RepositoryNotFoundError as exc:
        raise FetchError(f"{repo_id} was not found on {constants.ENDPOINT} (or it is private)") from exc
    except Exception as exc:  # any transport failure (DNS, TLS, timeout) means "unreachable" here
        raise FetchError(
            f"cannot reach {constants.ENDPOINT} to fetch {repo_id} ({type(exc).__name__}: {exc}). "
            f"Without hub access, copy a checkpoint directory to this machine and pass "
            f"--checkpoint chat=DIR."
        ) from exc
    return Path(snapshot_download(repo_id, local_dir=dest, etag_timeout=timeout))
