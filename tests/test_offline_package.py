"""Offline packages: built from each plugin's uv.lock, checked by the validator, installed without network.

The real plugins are built for linux amd64 and arm64 (wheels cached in .cache/wheels). The amd64
packages are then installed exactly as the daemon installs a package without pyproject.toml
(``uv pip install -r requirements.txt`` into a fresh Python 3.12 venv) inside a network namespace
with no interface and an empty uv cache, and the installed plugins answer a chat and an OCR call
from the real tritonserver (the install is offline; the plugin then talks to Triton on loopback).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devtools import build_packages, plugin_harness
from devtools.build_packages import build_offline_plugin, build_plugin
from devtools.files_server import FilesServer
from devtools.offline_wheels import WheelError, fetch_wheels, runtime_packages
from devtools.pkgcheck import validate, validate_zip
from devtools.pkgcheck.platforms import OFFLINE_REQUIREMENTS_FIRST_LINE, TARGETS
from devtools.plugin_harness import PluginProcess
from tests import media_fixtures as fx
from tests.conftest import ROOT, WORK
from tests.test_llm_plugin import assert_streamed, image_part, invoke, user
from tests.test_ocr_engine import encode as encode_image
from tests.text_images import LINES, three_lines
from tests.tool_runs import run_tool

PLUGINS = {"models": ROOT / "plugins" / "model_provider", "tools": ROOT / "plugins" / "tools"}
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(plugin, arch) -> the offline package built from the repository's plugin."""
    out = tmp_path_factory.mktemp("offline")
    return {
        (plugin, arch): build_offline_plugin(PLUGINS[plugin], out, TARGETS[arch]).path
        for plugin in PLUGINS
        for arch in TARGETS
    }


def names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.namelist()


def offline_requirements(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        return archive.read("requirements.txt").decode().splitlines()


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TARGETS)
@pytest.mark.parametrize("plugin", PLUGINS)
def test_offline_package_layout(offline: dict, plugin: str, arch: str) -> None:
    package = offline[(plugin, arch)]
    assert package.name.endswith(f"-0.1.0-offline-linux-{arch}.difypkg")
    assert validate(package) == []
    entries = names(package)
    assert "pyproject.toml" not in entries and "uv.lock" not in entries
    lines = offline_requirements(package)
    assert lines[0] == OFFLINE_REQUIREMENTS_FIRST_LINE
    wheels = sorted(name for name in entries if name.startswith("wheels/"))
    assert len(wheels) == len(lines) - 1  # one wheel per pinned requirement
    other = MACHINES["arm64" if arch == "amd64" else "amd64"]
    assert not [w for w in wheels if other in w], "a wheel for the other architecture"
    assert any(MACHINES[arch] in w for w in wheels)  # numpy, pillow, grpcio... are compiled
    with zipfile.ZipFile(package) as archive:
        assert sum(info.file_size for info in archive.infolist()) < 52_428_800  # the daemon's default cap


@pytest.mark.parametrize("arch", TARGETS)
@pytest.mark.parametrize("plugin", PLUGINS)
def test_offline_set_is_what_a_mirror_install_gets(offline: dict, plugin: str, arch: str) -> None:
    """The wheels pin exactly the online requirements.txt (from the same lock) that apply on the platform."""
    environment = TARGETS[arch].marker_environment()
    online = (PLUGINS[plugin] / "requirements.txt").read_text().splitlines()
    expected = {
        str(req).split(";")[0].strip()
        for req in map(Requirement, filter(None, online))
        if req.marker is None or req.marker.evaluate(environment)
    }
    assert set(offline_requirements(offline[(plugin, arch)])[1:]) == expected


def test_build_command_writes_online_and_offline_the_same_bytes(offline: dict, tmp_path: Path) -> None:
    assert build_packages.main(["--out", str(tmp_path), str(PLUGINS["tools"])]) == 0
    built = sorted(path.name for path in tmp_path.glob("*.difypkg"))
    assert built == [
        "triton_multimodal_tools-0.1.0-offline-linux-amd64.difypkg",
        "triton_multimodal_tools-0.1.0-offline-linux-arm64.difypkg",
        "triton_multimodal_tools-0.1.0.difypkg",
    ]
    for arch in TARGETS:  # a second build from the same sources and lock: the same bytes
        again = tmp_path / f"triton_multimodal_tools-0.1.0-offline-linux-{arch}.difypkg"
        assert again.read_bytes() == offline[("tools", arch)].read_bytes()


# --------------------------------------------------------------------------------------------
# The validator on broken offline packages (each built from the real amd64 one)
# --------------------------------------------------------------------------------------------


def variant(package: Path, change: Callable[[dict[str, bytes]], None]) -> list[str]:
    with zipfile.ZipFile(package) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    change(files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with zipfile.ZipFile(buffer) as archive:
        return validate_zip(archive)


def _wheel_of(files: dict[str, bytes], project: str) -> str:
    [name] = [n for n in files if n.startswith(f"wheels/{project}-")]
    return name


def _swap_in_arm64_numpy(offline: dict) -> Callable[[dict[str, bytes]], None]:
    with zipfile.ZipFile(offline[("models", "arm64")]) as archive:
        [arm] = [n for n in archive.namelist() if n.startswith("wheels/numpy-")]
        data = archive.read(arm)

    def change(files: dict[str, bytes]) -> None:
        del files[_wheel_of(files, "numpy")]
        files[arm] = data

    return change


def _requirements(edit: Callable[[list[str]], None]) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        lines = files["requirements.txt"].decode().splitlines()
        edit(lines)
        files["requirements.txt"] = ("\n".join(lines) + "\n").encode()

    return change


OFFLINE_BREAKAGES = {
    "pyproject": (
        lambda files: files.update({"pyproject.toml": b'[project]\nname = "x"\n'}),
        "pyproject.toml: must not be in an offline package",
    ),
    "first-line": (
        _requirements(lambda lines: lines.__setitem__(0, "--find-links=./wheels/")),
        "the first line must be '--no-index --find-links=./wheels/'",
    ),
    "missing-wheel": (
        lambda files: files.pop(_wheel_of(files, "ml_dtypes")),
        "requires ml-dtypes==0.5.4, but wheels/ has no wheel of it",
    ),
    "unpinned": (
        _requirements(lambda lines: lines.__setitem__(lines.index("pyyaml==6.0.3"), "pyyaml>=6")),
        "'pyyaml>=6' must pin one version",
    ),
    "unused-wheel": (  # grpcio comes from tritonclient's grpc extra, which only the flat pin list carries
        _requirements(lambda lines: lines.remove("grpcio==1.85.1")),
        "wheels/grpcio-1.85.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl: no requirement needs it",
    ),
}


@pytest.mark.parametrize("case", OFFLINE_BREAKAGES)
def test_each_offline_rule_reports_its_problem(offline: dict, case: str) -> None:
    change, expected = OFFLINE_BREAKAGES[case]
    problems = variant(offline[("models", "amd64")], change)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_wheel_for_another_platform_is_refused(offline: dict) -> None:
    problems = variant(offline[("models", "amd64")], _swap_in_arm64_numpy(offline))
    assert len(problems) == 1, problems
    assert "manylinux_2_28_aarch64.whl: not installable on CPython 3.12 on linux amd64" in problems[0]


# --------------------------------------------------------------------------------------------
# Wheels from the lock: markers, sdists, hashes
# --------------------------------------------------------------------------------------------


def _lock(packages: list[str]) -> str:
    project = (
        '[[package]]\nname = "fake"\nversion = "0.1.0"\nsource = { virtual = "." }\n'
        'dependencies = [{ name = "tinypkg" }, { name = "armonly", marker = "platform_machine == \'aarch64\'" }]\n'
    )
    return 'version = 1\nrequires-python = ">=3.12"\n\n' + "\n".join([project, *packages])


def _entry(name: str, path: Path, kind: str, digest: str | None = None) -> str:
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    table = f'{{ url = "{path.as_uri()}", hash = "sha256:{digest}" }}'
    files = f"sdist = {table}" if kind == "sdist" else f"wheels = [{table}]"
    return (
        f'[[package]]\nname = "{name}"\nversion = "1.0"\nsource = {{ registry = "https://pypi.org/simple" }}\n{files}\n'
    )


def _tiny_sdist(dest: Path) -> Path:
    """A pure-Python sdist (flit_core backend), as a lock may pin for a project without wheels."""
    import tarfile

    root = dest / "tinypkg-1.0"
    (root / "tinypkg").mkdir(parents=True)
    (root / "tinypkg" / "__init__.py").write_text('"""Tiny."""\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.9,<4"]\nbuild-backend = "flit_core.buildapi"\n\n'
        '[project]\nname = "tinypkg"\nversion = "1.0"\ndescription = "Tiny."\n'
    )
    (root / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\nSummary: Tiny.\n")
    archive = dest / "tinypkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tinypkg-1.0")
    return archive


def _arm_wheel(dest: Path) -> Path:
    wheel = dest / "armonly-1.0-py3-none-manylinux_2_17_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("armonly/__init__.py", "")
    return wheel


def test_sdist_only_dependency_is_built_once_into_a_pure_wheel(tmp_path: Path) -> None:
    sdist, arm = _tiny_sdist(tmp_path), _arm_wheel(tmp_path)
    lock = tmp_path / "uv.lock"
    lock.write_text(_lock([_entry("tinypkg", sdist, "sdist"), _entry("armonly", arm, "wheel")]))
    cache = tmp_path / "cache"
    [built] = fetch_wheels(lock, TARGETS["amd64"], cache)  # armonly's marker is false on amd64
    assert built.filename.startswith("tinypkg-1.0-") and built.filename.endswith("-none-any.whl")  # pure Python
    stamp = built.path.stat().st_mtime_ns
    again = fetch_wheels(lock, TARGETS["amd64"], cache)
    assert again[0].path == built.path and built.path.stat().st_mtime_ns == stamp  # taken from the cache
    assert [w.name for w in fetch_wheels(lock, TARGETS["arm64"], cache)] == ["armonly", "tinypkg"]


def test_lock_problems_name_the_package(tmp_path: Path) -> None:
    arm = _arm_wheel(tmp_path)
    lock = tmp_path / "uv.lock"
    lock.write_text(_lock([_entry("tinypkg", arm, "wheel"), _entry("armonly", arm, "wheel")]))
    with pytest.raises(WheelError, match="tinypkg 1.0 has no wheel for CPython 3.12 on linux amd64"):
        fetch_wheels(lock, TARGETS["amd64"], tmp_path / "cache")
    lock.write_text(_lock([_entry("tinypkg", _tiny_sdist(tmp_path), "sdist", "0" * 64)]))
    with pytest.raises(WheelError, match="is not the locked 0000"):
        fetch_wheels(lock, TARGETS["amd64"], tmp_path / "cache")


def test_markers_pick_the_platform_s_packages() -> None:
    lock = {
        "package": [
            {"name": "fake", "version": "0.1.0", "source": {"virtual": "."},
             "dependencies": [{"name": "a", "extra": ["x"]}, {"name": "w", "marker": "sys_platform == 'win32'"}]},
            {"name": "a", "version": "1", "optional-dependencies": {"x": [{"name": "b"}]}},
            {"name": "b", "version": "2"},
            {"name": "w", "version": "3"},
        ]
    }  # fmt: skip
    assert [(p.name, p.version) for p in runtime_packages(lock, TARGETS["amd64"])] == [("a", "1"), ("b", "2")]


# --------------------------------------------------------------------------------------------
# Installed without network, used against the real tritonserver
# --------------------------------------------------------------------------------------------


def test_without_network_the_online_package_cannot_install(tmp_path: Path) -> None:
    """The namespace really has no network: the lock's PyPI URLs cannot be fetched there."""
    package = build_plugin(PLUGINS["models"], tmp_path / "dist").path
    with pytest.raises(RuntimeError, match="(?s)uv sync --no-dev --frozen failed.*error sending request"):
        plugin_harness.install(package, tmp_path / "online", uv_cache=tmp_path / "empty-cache", network=False)


def test_a_daemon_with_a_pip_mirror_still_installs_from_the_wheels(offline: dict, tmp_path: Path) -> None:
    """PIP_MIRROR_URL (which the daemon may pick by itself) adds -i; the file's --no-index wins over it."""
    plugin_dir = plugin_harness.install(
        offline[("models", "amd64")],
        tmp_path / "plugin",
        uv_cache=tmp_path / "empty-cache",
        network=False,
        pip_mirror_url="http://mirror.invalid/simple",
    )
    python = plugin_dir / ".venv" / "bin" / "python"
    imports = "import dify_plugin, tritonclient.grpc, numpy, PIL, httpx"
    assert subprocess.run([str(python), "-c", imports], capture_output=True).returncode == 0


def _offline_plugin(package: Path, name: str, env: dict[str, str] | None = None) -> Iterator[PluginProcess]:
    cache = WORK / f"{name}-uv-cache"  # empty: nothing may come from an earlier install
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    plugin_dir = plugin_harness.install(package, WORK / name, uv_cache=cache, network=False)
    assert not (plugin_dir / "pyproject.toml").exists()
    process = PluginProcess(plugin_dir, env)
    process.wait_ready()
    yield process
    process.stop()
    assert not process.violations, process.violations


@pytest.fixture(scope="module")
def offline_models(offline: dict) -> Iterator[PluginProcess]:
    yield from _offline_plugin(offline[("models", "amd64")], "offline_models")


@pytest.fixture(scope="module")
def offline_tools(offline: dict, files_server: FilesServer) -> Iterator[PluginProcess]:
    yield from _offline_plugin(
        offline[("tools", "amd64")], "offline_tools", {"INTERNAL_FILES_URL": files_server.base_url}
    )


def test_offline_install_chats(offline_models: PluginProcess, credentials: dict) -> None:
    chunks = invoke(offline_models, credentials, user(image_part(fx.png())))
    assert_streamed(chunks)
    assert chunks[-1]["delta"]["usage"]["completion_tokens"] >= 1


def test_offline_install_reads_text(offline_tools: PluginProcess, credentials: dict, files_server: FilesServer) -> None:
    image = files_server.add("offline.png", encode_image(three_lines()), "image/png")
    run = run_tool(offline_tools, {**credentials, "read_timeout": "300"}, "ocr", {"images": [image]})
    assert run.text.splitlines() == LINES
