"""Tests for devtools.build_packages and devtools.pkgcheck (with its command line, devtools.validate_package).

A small but complete model-provider plugin is written to a temp dir. The build tests check the
zip the builder makes from it; each rule test breaks exactly one thing in it and expects exactly
one problem, naming that rule (so the untouched plugin is also proven valid).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools import build_packages, validate_package
from devtools.build_packages import BuildError, IgnorePattern, IgnoreRules, collect_files
from devtools.pkgcheck import archive as archive_checks
from devtools.pkgcheck import validate
from tests.fake_plugins import (
    EXPECTED_ENTRIES,
    MODEL_PROVIDER,
    TOOL_FILES,
    edit,
    make_model_plugin,
    make_tool_plugin,
    package,
    problems_of,
    rezip,
    with_languages,
    write_files,
)


@pytest.fixture
def model_plugin(tmp_path: Path) -> Path:
    return make_model_plugin(tmp_path)


@pytest.fixture
def tool_plugin(tmp_path: Path) -> Path:
    return make_tool_plugin(tmp_path)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def test_build_is_deterministic(model_plugin: Path, tmp_path: Path) -> None:
    first = build_packages.build_plugin(model_plugin, tmp_path / "out1")
    # Timestamps and permissions of the sources must not leak into the package.
    for path in model_plugin.rglob("*"):
        if path.is_file():
            os.utime(path, (1_900_000_000, 1_900_000_000))
    (model_plugin / "main.py").chmod(0o755)
    second = build_packages.build_plugin(model_plugin, tmp_path / "out2")

    assert first.path.name == "fake_models-0.1.0.difypkg"
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256
    assert first.file_count == len(EXPECTED_ENTRIES)


def test_zip_holds_files_only_with_fixed_metadata(model_plugin: Path, tmp_path: Path) -> None:
    built = build_packages.build_plugin(model_plugin, tmp_path / "out")
    with zipfile.ZipFile(built.path) as archive:
        infos = archive.infolist()
        assert archive.comment == b""
        assert [info.filename for info in infos] == EXPECTED_ENTRIES  # sorted, nothing ignored
        for info in infos:
            assert not info.is_dir()
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.compress_type == zipfile.ZIP_DEFLATED
        # The symlinked shared library arrives as regular files with the target's bytes.
        assert archive.read("shared/util.py") == (tmp_path / "shared_src/util.py").read_bytes()


def test_built_package_is_valid(model_plugin: Path, tmp_path: Path) -> None:
    built = build_packages.build_plugin(model_plugin, tmp_path / "out")
    assert validate(built.path) == []


def test_bytecode_is_never_packaged(model_plugin: Path) -> None:
    (model_plugin / ".difyignore").write_text("", encoding="utf-8")
    names = {source.arcname for source in collect_files(model_plugin)}
    assert "__pycache__/main.cpython-312.pyc" not in names
    assert "shared/__pycache__/util.cpython-312.pyc" not in names
    assert "debug.log" in names  # the rest of the empty ignore file is honoured as written


def test_gitignore_is_read_only_without_difyignore(model_plugin: Path) -> None:
    (model_plugin / ".gitignore").write_text("debug.log\n", encoding="utf-8")
    assert "debug.log" not in {source.arcname for source in collect_files(model_plugin)}

    (model_plugin / ".difyignore").unlink()
    names = {source.arcname for source in collect_files(model_plugin)}
    assert "debug.log" not in names
    assert "scratch/notes.txt" in names  # only .gitignore's patterns apply now


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "excluded"),
    [
        ("lib/", "lib", True, True),
        ("lib/", "src/lib", True, True),  # a bare dir/ matches at any depth
        ("lib/", "lib", False, False),  # dir-only: not a file called lib
        ("lib/", "lib/x.py", False, True),  # ...but everything inside the directory
        ("*.py[cod]", "a/b/c.pyc", False, True),
        ("*.py[cod]", "a/b/c.py", False, False),
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),  # a leading / anchors to the plugin root
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "x/docs/a.md", False, False),
        ("docs/**/*.md", "docs/a/b/c.md", False, True),
        ("**/tmp", "a/b/tmp", True, True),
        (".env", ".env.example", False, False),
    ],
)
def test_ignore_pattern_semantics(pattern: str, path: str, is_dir: bool, excluded: bool) -> None:
    parsed = IgnorePattern.parse(pattern)
    assert parsed is not None
    assert parsed.excludes(tuple(path.split("/")), is_dir) is excluded


def test_negated_ignore_lines_are_no_ops_like_the_daemon() -> None:
    rules = IgnoreRules.from_lines(["*.log", "!keep.log"])
    assert rules.excludes(("keep.log",), False)


def test_symlink_loop_is_refused(model_plugin: Path) -> None:
    (model_plugin / "loop").symlink_to(".", target_is_directory=True)
    with pytest.raises(BuildError, match="symlink loop"):
        collect_files(model_plugin)


def test_dangling_symlink_is_refused(model_plugin: Path) -> None:
    (model_plugin / "gone").symlink_to("nowhere")
    with pytest.raises(BuildError, match="dangling symlink"):
        collect_files(model_plugin)


def test_build_cli_prints_and_refuses_invalid_plugins(
    model_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dist"
    assert build_packages.main(["--online-only", "--out", str(out), str(model_plugin)]) == 0
    printed = capsys.readouterr().out
    assert "fake_models-0.1.0.difypkg" in printed and "sha256=" in printed
    assert f"{len(EXPECTED_ENTRIES)} files" in printed

    edit(model_plugin / "manifest.yaml", "version: 0.1.0", "version: v0.2.0")
    assert build_packages.main(["--online-only", "--out", str(out), str(model_plugin)]) == 1
    assert "version 'v0.2.0' does not match" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["fake_models-0.1.0.difypkg"]


def test_validate_cli_exit_status(model_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = build_packages.build_plugin(model_plugin, tmp_path / "out").path
    assert validate_package.main([str(good)]) == 0
    bad = rezip(good, tmp_path / "bad.difypkg", lambda z: z.writestr(".env", "SECRET=1\n"))
    assert validate_package.main([str(good), str(bad)]) == 1
    assert ".env: .env file" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# One broken rule -> exactly one problem naming it
# --------------------------------------------------------------------------------------------


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda plugin: edit(plugin / name, old, new)


def _delete(name: str) -> Callable[[Path], None]:
    return lambda plugin: (plugin / name).unlink()


def _add_tools(plugin: Path) -> None:
    write_files(plugin, TOOL_FILES)
    edit(plugin / "manifest.yaml", "plugins:\n", "plugins:\n  tools:\n    - provider/fake_tools.yaml\n")


def _second_model_provider(plugin: Path) -> None:
    write_files(plugin, {"provider/fake2.yaml": MODEL_PROVIDER})
    edit(
        plugin / "manifest.yaml",
        "    - provider/fake.yaml\n",
        "    - provider/fake.yaml\n    - provider/fake2.yaml\n",
    )


def _no_privacy(plugin: Path) -> None:
    (plugin / "PRIVACY.md").unlink()
    edit(plugin / "manifest.yaml", "privacy: PRIVACY.md\n", "")


BREAKAGES = [
    # manifest.yaml
    pytest.param(
        _edit("manifest.yaml", "author: acme", "author: Acme"),
        "author 'Acme' does not match",
        id="uppercase-author",
    ),
    pytest.param(
        _edit("manifest.yaml", "author: acme", "author: 123e4567-e89b-12d3-a456-426614174000"),
        "parses as a UUID",
        id="uuid-author",
    ),
    pytest.param(
        _edit("manifest.yaml", "author: acme", "author: difyfan"),
        "contains 'langgenius' or 'dify'",
        id="reserved-author",
    ),
    pytest.param(
        _edit("manifest.yaml", "name: fake_models", "name: Fake"),
        "name 'Fake' does not match",
        id="uppercase-name",
    ),
    pytest.param(
        _edit("manifest.yaml", "version: 0.1.0", "version: '0.1'"),
        "version '0.1' does not match",
        id="bad-version",
    ),
    pytest.param(_edit("manifest.yaml", "type: plugin", "type: bundle"), "type 'bundle' is not one of", id="type"),
    pytest.param(_edit("manifest.yaml", "[utilities]", "[utilities, robots]"), "unknown value(s) ['robots']", id="tag"),
    pytest.param(_edit("manifest.yaml", "arm64]", "riscv64]"), "unknown value(s) ['riscv64']", id="arch"),
    pytest.param(
        _edit("manifest.yaml", 'version: "3.12"', "version: 3.12"),
        "must be a string, got float 3.12",
        id="runner-version-float",
    ),
    pytest.param(
        _edit("manifest.yaml", "memory: 268435456", "memory: 256Mi"),
        "resource.memory must be an integer",
        id="memory",
    ),
    pytest.param(_edit("manifest.yaml", "T00:00:00Z", " 00:00:00"), "is not an RFC 3339 timestamp", id="created-at"),
    pytest.param(
        _edit("manifest.yaml", "icon: icon.svg", "icon: logo.svg"),
        "icon 'logo.svg' is not a file under _assets/",
        id="manifest-icon",
    ),
    pytest.param(_delete("main.py"), "needs main.py in the package", id="entrypoint"),
    pytest.param(_add_tools, "declares models together with ['tools']", id="models-with-tools"),
    pytest.param(_second_model_provider, "lists 2 providers, at most one works", id="two-model-providers"),
    pytest.param(
        _edit("manifest.yaml", "provider/fake.yaml", "provider/gone.yaml"),
        "plugins.models names 'provider/gone.yaml'",
        id="missing-provider",
    ),
    # documents
    pytest.param(_delete("README.md"), "README.md: file is missing", id="readme"),
    pytest.param(_no_privacy, "PRIVACY.md: file is missing", id="privacy"),
    # dependency files
    pytest.param(
        _edit("requirements.txt", "pyyaml==6.0.2", "pyyaml==6.0.1"),
        "pyyaml==6.0.1 disagrees with uv.lock (pyyaml 6.0.2)",
        id="requirements-vs-lock",
    ),
    pytest.param(
        _edit("requirements.txt", "pyyaml==6.0.2\n", ""),
        "does not name pyproject dependency 'PyYAML'",
        id="requirements-incomplete",
    ),
    pytest.param(
        _edit("pyproject.toml", 'requires-python = ">=3.12"', 'requires-python = ">=3.13"'),
        "excludes Python 3.12",
        id="requires-python",
    ),
    pytest.param(_delete("uv.lock"), "uv.lock: file is missing", id="no-lock"),
    pytest.param(
        _edit(
            "uv.lock",
            'name = "pyyaml"',
            'name = "torchvision"\nversion = "0.20.0"\n\n[[package]]\nname = "pyyaml"',
        ),
        "torchvision must not be installed",
        id="torchvision",
    ),
    # model provider
    pytest.param(
        _edit("provider/fake.yaml", "{en_US: icon.svg}", "{en_US: icon.svg, zh_Hans: icon_zh.svg}"),
        "icon_small.zh_Hans 'icon_zh.svg' is not a file under _assets/",
        id="provider-icon-locale",
    ),
    pytest.param(
        _edit("provider/fake.yaml", "provider: fake", "provider: fake.ai"),
        "provider 'fake.ai' does not match",
        id="provider-name",
    ),
    pytest.param(
        _edit("provider/fake.yaml", "[llm]", "[llm, text2img]"),
        "unknown value(s) ['text2img']",
        id="model-type",
    ),
    pytest.param(
        _edit("provider/fake.yaml", "type: text-input", "type: password"),
        "credential_form_schemas[0].type 'password'",
        id="form-type",
    ),
    pytest.param(
        _edit("provider/fake.yaml", '["models/llm/*.yaml"]', '["models/llm/*.yaml", "models/tts/*.yaml"]'),
        "'models/tts/*.yaml' matches no file in the package",
        id="predefined-glob",
    ),
    pytest.param(
        _edit("models/llm/_position.yaml", "- fake-chat\n", "- fake-chat\n- ghost\n"),
        "lists ['ghost']",
        id="position",
    ),
    pytest.param(_delete("provider/fake.py"), "provider_source names 'provider/fake.py'", id="provider-source"),
    # model YAML
    pytest.param(
        _edit("models/llm/fake-chat.yaml", "vision, stream", "telepathy, stream"),
        "unknown value(s) ['telepathy']",
        id="feature",
    ),
    pytest.param(
        _edit("models/llm/fake-chat.yaml", "vision, stream", "polling, stream"),
        "Dify <= 1.14 rejects",
        id="polling",
    ),
    pytest.param(
        _edit("models/llm/fake-chat.yaml", "use_template: temperature", "use_template: temprature"),
        "use_template 'temprature' is not one of",
        id="use-template",
    ),
    pytest.param(
        _edit("models/llm/fake-chat.yaml", with_languages("    label: {en_US: Seed}\n"), ""),
        "parameter_rules[1].label is missing",
        id="custom-rule-label",
    ),
    pytest.param(
        _edit("models/llm/fake-chat.yaml", "context_size: 4096", "context_size: big"),
        "context_size must be an integer",
        id="context-size",
    ),
    pytest.param(
        _edit("models/llm/fake-chat.yaml", "model_type: llm", "model_type: llm\nmodel_type: tts"),
        "duplicate key 'model_type'",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), BREAKAGES)
def test_each_rule_reports_its_problem(
    model_plugin: Path, tmp_path: Path, breakage: Callable[[Path], None], expected: str
) -> None:
    breakage(model_plugin)
    problems = problems_of(model_plugin, tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_dependency_added_to_pyproject_only(model_plugin: Path, tmp_path: Path) -> None:
    # One edit, two stale files: each gets its own problem, since each needs its own fix.
    edit(model_plugin / "pyproject.toml", '"PyYAML>=6"', '"PyYAML>=6", "httpx"')
    problems = problems_of(model_plugin, tmp_path)
    assert len(problems) == 2, problems
    assert "requirements.txt: does not name pyproject dependency 'httpx'" in problems[0]
    assert "uv.lock: has no entry for pyproject dependency 'httpx'" in problems[1]


def test_directory_entry_is_refused(model_plugin: Path, tmp_path: Path) -> None:
    good = package(model_plugin, tmp_path)
    bad = rezip(good, tmp_path / "bad.difypkg", lambda z: z.writestr(zipfile.ZipInfo("models/"), b""))
    problems = validate(bad)
    assert len(problems) == 1 and "models/: directory entry" in problems[0], problems


def test_unsafe_path_is_refused(model_plugin: Path, tmp_path: Path) -> None:
    good = package(model_plugin, tmp_path)
    bad = rezip(good, tmp_path / "bad.difypkg", lambda z: z.writestr("../evil.py", "x"))
    problems = validate(bad)
    assert len(problems) == 1 and "../evil.py: unsafe path" in problems[0], problems


def test_oversize_package_is_refused(model_plugin: Path, tmp_path: Path) -> None:
    # A sparse file: 50 MB + 1 on paper, no disk blocks, and zeros deflate to almost nothing.
    with open(model_plugin / "_assets/huge.bin", "wb") as handle:
        handle.truncate(archive_checks.MAX_UNCOMPRESSED_BYTES + 1)
    problems = problems_of(model_plugin, tmp_path)
    assert len(problems) == 1 and "bytes uncompressed, over 52428800" in problems[0], problems
    assert "_assets/huge.bin" in problems[0]  # the largest files are named, like the daemon does


def test_oversize_upload_is_refused(model_plugin: Path, tmp_path: Path) -> None:
    # The daemon caps the uploaded file too. Leading bytes before a zip are legal (zip offsets are
    # found from the end), so a sparse file of zeros followed by a small valid package is one.
    small = package(model_plugin, tmp_path).read_bytes()
    big = tmp_path / "big.difypkg"
    with open(big, "wb") as handle:
        handle.seek(archive_checks.MAX_UNCOMPRESSED_BYTES)
        handle.write(small)
    problems = validate(big)
    assert len(problems) == 1 and f"the file is {big.stat().st_size} bytes, over 52428800" in problems[0], problems


def test_too_many_files_is_refused(model_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_checks, "MAX_FILES", len(EXPECTED_ENTRIES) - 1)
    problems = problems_of(model_plugin, tmp_path)
    assert len(problems) == 1 and f"{len(EXPECTED_ENTRIES)} files, over" in problems[0], problems


# --------------------------------------------------------------------------------------------
# Tool provider package
# --------------------------------------------------------------------------------------------


def test_tool_plugin_is_valid(tool_plugin: Path, tmp_path: Path) -> None:
    assert problems_of(tool_plugin, tmp_path) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        pytest.param(
            _edit(
                "provider/fake_tools.yaml",
                "credentials_for_provider:\n  server_url:",
                "credentials_for_provider:\n  - server_url:",
            ),
            "credentials_for_provider must be a mapping, got list",
            id="credentials-list",
        ),
        pytest.param(
            lambda plugin: edit(
                plugin / "provider/fake_tools.yaml",
                "credentials_for_provider:\n  server_url:\n    type: text-input\n    required: true\n"
                + with_languages("    label: {en_US: Server URL}\n"),
                "credentials_for_provider:\n",
            ),
            "credentials_for_provider must be a mapping, got null",
            id="credentials-null",
        ),
        pytest.param(
            _edit("provider/fake_tools.yaml", "tags: [utilities]", "tags: [agent]"),
            "unknown value(s) ['agent']",
            id="agent-tag",
        ),
        pytest.param(
            _edit("tools/echo.yaml", "form: llm", "form: auto"),
            "parameters[0].form 'auto' is not one of",
            id="parameter-form",
        ),
        pytest.param(
            _edit("tools/echo.yaml", with_languages("    human_description: {en_US: The text to echo}\n"), ""),
            "parameters[0].human_description is missing",
            id="human-description",
        ),
        pytest.param(
            _edit("tools/echo.yaml", "  llm: Returns the given text unchanged.\n", ""),
            "description.llm is missing",
            id="llm-description",
        ),
        pytest.param(
            _edit("tools/echo.yaml", "  type: object", "  type: array"),
            "output_schema must be a JSON Schema with type: object",
            id="output-schema",
        ),
        pytest.param(_delete("tools/echo.py"), "extra.python.source names 'tools/echo.py'", id="tool-source"),
    ],
)
def test_each_tool_rule_reports_its_problem(
    tool_plugin: Path, tmp_path: Path, breakage: Callable[[Path], None], expected: str
) -> None:
    breakage(tool_plugin)
    problems = problems_of(tool_plugin, tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_real_plugins_build_deterministically_and_validate(tmp_path: Path) -> None:
    """The repository's own plugins, not a fixture: same sources, same bytes, no problems."""
    from devtools.build_packages import build_plugin, discover_plugins

    root = Path(__file__).resolve().parent.parent / "plugins"
    plugins = discover_plugins(root)
    assert plugins, "no plugin found under plugins/"
    for plugin_dir in plugins:
        first = build_plugin(plugin_dir, tmp_path / "a")
        second = build_plugin(plugin_dir, tmp_path / "b")
        assert first.path.read_bytes() == second.path.read_bytes()
        assert validate(first.path) == []
        with zipfile.ZipFile(first.path) as archive:
            names = archive.namelist()
        assert "tritonmm/contract.py" in names  # the shared core travels inside the package
        assert not any(n.startswith(("tests/", ".venv/")) or "__pycache__" in n for n in names)
