"""Locate the tritonserver binary that ships inside the nvidia-pytriton wheel, and its environment.

Stdlib only. The python-backend stub embeds whichever ``python3`` it finds on PATH and
links the ``libpython`` the dynamic linker finds, so the environment built by
:func:`server_environment` is what makes models see this venv's packages (a stub that
links another patch release of libpython fails to import ``ssl`` and with it
transformers).
"""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tritonmm_server.ops.errors import ServerNotInstalled
from tritonmm_server.ops.paths import REPO_ROOT, REQUIREMENTS

LOG = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"


def _install_hint() -> str:
    return f"install the server requirements: {sys.executable} -m pip install -r {REQUIREMENTS}"


# --- locating the binary and the python-backend stub ----------------------------


def find_tritonserver_dir() -> Path:
    """The ``tritonserver`` directory of the installed nvidia-pytriton wheel.

    Uses ``find_spec`` rather than importing pytriton, which would pull in its
    whole client stack just to learn a path.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerNotInstalled(f"nvidia-pytriton is not installed in {sys.prefix}; {_install_hint()}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not os.access(binary, os.X_OK):
        raise ServerNotInstalled(f"no executable tritonserver at {binary}; {_install_hint()}")
    return root


def ensure_python_stub(tritonserver_dir: Path, version: tuple[int, int] | None = None) -> Path:
    """Copy the stub built for this interpreter's major.minor into ``backends/python``.

    The wheel ships one stub per Python version and none in ``backends/python``;
    a stub for another version would link the wrong libpython. Idempotent, and the
    copy is atomic (temp file + rename) so two launchers racing cannot leave a
    half-written binary, and a server already running keeps its old inode.
    """
    major, minor = version or sys.version_info[:2]
    source = tritonserver_dir / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME
    if not source.is_file():
        raise ServerNotInstalled(f"nvidia-pytriton ships no python-backend stub for Python {major}.{minor} ({source})")
    target = tritonserver_dir / "backends" / "python" / STUB_NAME
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return target
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{STUB_NAME}.", dir=target.parent)
        os.close(fd)
        shutil.copy2(source, tmp_name)
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    except OSError as exc:
        raise ServerNotInstalled(f"cannot install the python-backend stub into {target.parent}: {exc}") from exc
    LOG.info("installed the Python %d.%d python-backend stub into %s", major, minor, target.parent)
    return target


def check_numpy() -> None:
    # triton_python_backend_utils imports numpy: without it no python model loads,
    # and the error would only surface per model, deep in the server log.
    if importlib.util.find_spec("numpy") is None:
        raise ServerNotInstalled(f"numpy is missing from {sys.prefix}; {_install_hint()}")


# --- the server's environment ---------------------------------------------------------


def _prepend(entry: str, current: str | None) -> str:
    """``entry`` first, then the old entries without duplicates of it or empty items."""
    rest = [item for item in (current or "").split(os.pathsep) if item and item != entry]
    return os.pathsep.join([entry, *rest])


def python_libdir() -> Path:
    """The base interpreter's LIBDIR, where its own ``libpython`` lives."""
    return Path(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver and, through inheritance, its python stubs.

    * PATH: this venv's ``bin`` first. The embedded interpreter derives its prefix
      from the first ``python3`` on PATH; that is how it finds this venv's
      site-packages (torch, transformers, numpy).
    * LD_LIBRARY_PATH: the base interpreter's LIBDIR first. Otherwise the stub may
      link a distribution libpython of another patch release, and C extensions of
      the venv's stdlib (``_ssl``) fail with undefined symbols.
    * PYTHONPATH: the repository root, so models import ``tritonmm`` from this tree.
    * LC_CTYPE: a UTF-8 locale for the stubs, which :mod:`tritonmm_server.backend`
      applies (the embedded interpreter ignores PYTHONUTF8 and starts in the C locale).
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = _prepend(str(Path(sys.prefix) / "bin"), env.get("PATH", os.defpath))
    libdir = python_libdir()
    soname = sysconfig.get_config_var("INSTSONAME")
    if soname and not (libdir / soname).exists():
        LOG.warning(
            "%s has no %s (a Python built without --enable-shared?): the python stub will link "
            "whatever libpython the system has, which breaks imports of ssl/transformers "
            "when the patch versions differ",
            libdir,
            soname,
        )
    env["LD_LIBRARY_PATH"] = _prepend(str(libdir), env.get("LD_LIBRARY_PATH"))
    env["PYTHONPATH"] = _prepend(str(REPO_ROOT), env.get("PYTHONPATH"))
    if "UTF-8" not in (env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "").upper().replace(
        "UTF8", "UTF-8"
    ):
        env["LC_CTYPE"] = "C.UTF-8"
    return env
