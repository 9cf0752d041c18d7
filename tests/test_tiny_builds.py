"""The tiny builds: deterministic, small, split into what the product serves and what only tests use,
and built once per (arch, work dir)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

import tritonmm_server.tiny.build as tiny_build
from tritonmm_server.ops.weights import TINY_CHAT_ARCH, TINY_DUAL_ENCODER_ARCH
from tritonmm_server.tiny.build import ALL_ARCHS, FIXTURE_ARCHS, PRODUCT_ARCHS, build_tiny_model
from tritonmm_server.tiny.cache import ensure_tiny_model, tiny_dir


def digest(directory: Path) -> dict[str, str]:
    return {
        str(f.relative_to(directory)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(directory.rglob("*"))
        if f.is_file()
    }


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_a_rebuild_is_byte_identical_and_small(arch: str, tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    session = tiny_model(arch)
    rebuilt = build_tiny_model(arch, tmp_path / arch)
    assert "config.json" in digest(rebuilt)
    assert digest(rebuilt) == digest(session)
    assert sum(f.stat().st_size for f in rebuilt.rglob("*") if f.is_file()) < 5 * 2**20


def test_the_product_serves_two_builds_and_the_rest_are_test_fixtures() -> None:
    assert set(PRODUCT_ARCHS) == {TINY_CHAT_ARCH, TINY_DUAL_ENCODER_ARCH}
    assert set(PRODUCT_ARCHS) | set(FIXTURE_ARCHS) == set(ALL_ARCHS) and not set(PRODUCT_ARCHS) & set(FIXTURE_ARCHS)
    with pytest.raises(ValueError, match="unknown arch 'gpt'; choose one of idefics3, "):
        build_tiny_model("gpt", Path("/nonexistent"))


def test_a_build_is_reused_until_its_stamp_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = ensure_tiny_model(tmp_path, "clip")
    assert built == tiny_dir(tmp_path, "clip").resolve()
    files = digest(built)

    def no_rebuild(arch: str, dest: Path) -> Path:
        raise AssertionError(f"rebuilt {arch} although its build is current")

    with monkeypatch.context() as patched:
        patched.setattr(tiny_build, "build_tiny_model", no_rebuild)
        assert ensure_tiny_model(tmp_path, "clip") == built

    # A build made by another builder version (or library versions) is built again.
    stamp = built.with_name("clip.stamp")
    stamp.write_text("an older builder\n")
    (built / "model.safetensors").write_bytes(b"stale")
    assert ensure_tiny_model(tmp_path, "clip") == built
    assert digest(built) == files
    assert stamp.read_text() != "an older builder\n"
