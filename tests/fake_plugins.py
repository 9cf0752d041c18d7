"""A small but complete fake plugin (model provider or tools) for the packaging tests, and ways to break it.

Every translatable text is written in Dify's four languages (``with_languages``), so the untouched
plugin is valid and each test can take away exactly the thing it checks.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from devtools.build_packages import collect_files, write_zip
from devtools.pkgcheck import validate

LANGUAGE_SUFFIXES = {"zh_Hans": "（中文）", "ja_JP": "（日本語）", "pt_BR": " (português)"}


def with_languages(yaml_text: str) -> str:
    """Give every ``en_US`` text (flow or block style; not icon file names) its zh_Hans, ja_JP and pt_BR."""

    def others(text: str) -> list[tuple[str, str]]:
        return [(lang, f"{text}{suffix}") for lang, suffix in LANGUAGE_SUFFIXES.items()]

    def flow(match: re.Match[str]) -> str:
        text = match.group(1)
        if text.endswith(".svg"):
            return match.group(0)
        return "{" + ", ".join(f"{lang}: {value}" for lang, value in [("en_US", text), *others(text)]) + "}"

    def block(match: re.Match[str]) -> str:
        indent, text = match.group(1), match.group(2)
        return match.group(0) + "".join(f"\n{indent}{lang}: {value}" for lang, value in others(text))

    yaml_text = re.sub(r"\{en_US: ([^}]*)\}", flow, yaml_text)
    return re.sub(r"^( *)en_US: (.*)$", block, yaml_text, flags=re.MULTILINE)


MANIFEST = with_languages("""\
version: 0.1.0
type: plugin
author: acme
name: fake_models
label:
  en_US: Fake Models
description:
  en_US: A fake model provider used by the packaging tests.
icon: icon.svg
resource:
  memory: 268435456
plugins:
  models:
    - provider/fake.yaml
meta:
  version: 0.0.1
  arch: [amd64, arm64]
  runner:
    language: python
    version: "3.12"
    entrypoint: main
created_at: 2026-01-01T00:00:00Z
privacy: PRIVACY.md
tags: [utilities]
""")

MODEL_PROVIDER = with_languages("""\
provider: fake
label: {en_US: Fake}
icon_small: {en_US: icon.svg}
supported_model_types: [llm]
configurate_methods: [predefined-model]
provider_credential_schema:
  credential_form_schemas:
    - variable: server_url
      label: {en_US: Server URL}
      type: text-input
      required: true
models:
  llm:
    predefined: ["models/llm/*.yaml"]
    position: models/llm/_position.yaml
extra:
  python:
    provider_source: provider/fake.py
    model_sources: [models/llm/llm.py]
""")

CHAT_MODEL = with_languages("""\
model: fake-chat
label: {en_US: Fake Chat}
model_type: llm
features: [vision, stream-tool-call]
model_properties:
  mode: chat
  context_size: 4096
parameter_rules:
  - name: temperature
    use_template: temperature
  - name: seed
    type: int
    label: {en_US: Seed}
""")

PYPROJECT = """\
[project]
name = "fake-models"
version = "0.1.0"
requires-python = ">=3.12"
dependencies = ["dify_plugin>=0.10,<0.11", "PyYAML>=6"]
"""

UV_LOCK = """\
version = 1
requires-python = ">=3.12"

[[package]]
name = "dify-plugin"
version = "0.10.2"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "fake-models"
version = "0.1.0"
source = { virtual = "." }

[[package]]
name = "pyyaml"
version = "6.0.2"
source = { registry = "https://pypi.org/simple" }
"""

REQUIREMENTS = "dify-plugin==0.10.2\npyyaml==6.0.2\n"

DIFYIGNORE = """\
# local clutter
.venv/
*.py[cod]
.env
*.log
scratch/
"""

TOOL_PROVIDER = with_languages("""\
identity:
  author: acme
  name: fake_tools
  label: {en_US: Fake Tools}
  description: {en_US: Fake tools for the packaging tests.}
  icon: icon.svg
  tags: [utilities]
credentials_for_provider:
  server_url:
    type: text-input
    required: true
    label: {en_US: Server URL}
tools:
  - tools/echo.yaml
extra:
  python:
    source: provider/fake_tools.py
""")

ECHO_TOOL = with_languages("""\
identity:
  name: echo
  author: acme
  label: {en_US: Echo}
description:
  human: {en_US: Returns its input.}
  llm: Returns the given text unchanged.
parameters:
  - name: text
    type: string
    form: llm
    required: true
    label: {en_US: Text}
    human_description: {en_US: The text to echo}
output_schema:
  type: object
  properties:
    text: {type: string}
extra:
  python:
    source: tools/echo.py
""")

COMMON_FILES = {
    "main.py": "from dify_plugin import DifyPluginEnv, Plugin\n\nplugin = Plugin(DifyPluginEnv())\n",
    "README.md": "# Fake\n",
    "PRIVACY.md": "# Privacy\n\nNo data leaves your server.\n",
    "_assets/icon.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "pyproject.toml": PYPROJECT,
    "uv.lock": UV_LOCK,
    "requirements.txt": REQUIREMENTS,
    ".difyignore": DIFYIGNORE,
}
MODEL_FILES = {
    "manifest.yaml": MANIFEST,
    "provider/fake.yaml": MODEL_PROVIDER,
    "provider/fake.py": "class FakeProvider: ...\n",
    "models/llm/llm.py": "class FakeLLM: ...\n",
    "models/llm/fake-chat.yaml": CHAT_MODEL,
    "models/llm/_position.yaml": "- fake-chat\n",
}
TOOL_FILES = {
    "provider/fake_tools.yaml": TOOL_PROVIDER,
    "provider/fake_tools.py": "class FakeTools: ...\n",
    "tools/echo.yaml": ECHO_TOOL,
    "tools/echo.py": "class Echo: ...\n",
}
# Present in the source tree, but the ignore rules must keep them out of the package.
CLUTTER = {
    ".env": "SECRET=1\n",
    ".venv/bin/python": "",
    "debug.log": "noise\n",
    "scratch/notes.txt": "todo\n",
    "models/scratch/deep.txt": "a bare `scratch/` pattern matches at any depth\n",
    "__pycache__/main.cpython-312.pyc": "bytecode",
    "models/llm/__pycache__/llm.cpython-312.pyc": "bytecode",
}
SHARED_FILES = {
    "__init__.py": '"""Shared core."""\n',
    "util.py": "VALUE = 1\n",
    "__pycache__/util.cpython-312.pyc": "bytecode",
}
EXPECTED_ENTRIES = sorted([*COMMON_FILES, *MODEL_FILES, "shared/__init__.py", "shared/util.py"])


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def make_model_plugin(tmp_path: Path) -> Path:
    """A valid model plugin with clutter and a `shared -> ../shared_src` symlink, like `tritonmm`."""
    write_files(tmp_path / "shared_src", SHARED_FILES)
    plugin = tmp_path / "fake_models"
    write_files(plugin, {**COMMON_FILES, **MODEL_FILES, **CLUTTER})
    (plugin / "shared").symlink_to("../shared_src", target_is_directory=True)
    return plugin


def make_tool_plugin(tmp_path: Path) -> Path:
    plugin = tmp_path / "fake_tools"
    manifest = MANIFEST.replace("name: fake_models", "name: fake_tools").replace(
        "  models:\n    - provider/fake.yaml", "  tools:\n    - provider/fake_tools.yaml"
    )
    write_files(plugin, {**COMMON_FILES, **TOOL_FILES, "manifest.yaml": manifest})
    return plugin


def edit(path: Path, old: str, new: str) -> None:
    content = path.read_text(encoding="utf-8")
    assert content.count(old) == 1, f"{old!r} must occur exactly once in {path}"
    path.write_text(content.replace(old, new), encoding="utf-8")


def package(plugin: Path, tmp_path: Path) -> Path:
    """Zip a plugin as the builder does but without its validation gate, to inspect broken ones."""
    target = tmp_path / "inspect.difypkg"
    target.write_bytes(write_zip(collect_files(plugin)))
    return target


def problems_of(plugin: Path, tmp_path: Path) -> list[str]:
    return validate(package(plugin, tmp_path))


def rezip(source: Path, target: Path, extra: Callable[[zipfile.ZipFile], None]) -> Path:
    """Copy a package entry by entry, then let ``extra`` add what a hand-made zip might contain."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info.filename))
        extra(new)
    return target
