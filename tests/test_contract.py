"""The contract is spelled once: bundled configs match it, the plugin maps each
error class exactly once, settings parse Dify's string credentials."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_scan import imports_of, module_name, python_files
from tritonmm import contract, errors
from tritonmm.errors import InvalidInput
from tritonmm.settings import ServerSettings
from tritonmm_server.ops.repository import model_parameters

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "model_repository").glob("*/config.pbtxt"))


def _tensor_lines(config: str, spec: contract.TensorSpec) -> str:
    start = config.index(f'name: "{spec.name}"')
    return config[start : config.index("}", start)]


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.parent.name)
def test_bundled_config_matches_contract(config_path: Path) -> None:
    config = config_path.read_text()
    params = model_parameters(config)
    caps = contract.Capabilities.from_parameters(params)
    inputs, outputs = contract.TASK_SPECS[caps.task]
    for spec in (*inputs, *outputs):
        block = _tensor_lines(config, spec)
        assert f"data_type: {spec.triton_dtype}" in block, spec
        dims = re.search(r"dims:\s*\[([^\]]*)\]", block).group(1)
        assert tuple(int(d) for d in dims.split(",")) == spec.dims, spec
        assert ("optional: true" in block) == spec.optional, spec
    # streaming: one response per token or sentence; else one answer per request
    assert ("decoupled: true" in config) == (caps.task in contract.STREAMING_TASKS)
    batch = int(re.search(r"max_batch_size:\s*(\d+)", config).group(1))
    assert (batch > 0) == (caps.task in contract.BATCHED_TASKS)  # one item per row: batchable, cacheable


@pytest.mark.parametrize("task", list(contract.TASK_SPECS))
def test_contract_names_are_unique_per_task(task: contract.Task) -> None:
    inputs, outputs = contract.TASK_SPECS[task]
    names = [s.name for s in (*inputs, *outputs)]
    assert len(names) == len(set(names))


def test_capabilities_reject_unknown_feature() -> None:
    with pytest.raises(ValueError, match="tmm.features"):
        contract.Capabilities.from_parameters({contract.KEY_TASK: "chat", contract.KEY_FEATURES: "vision,smell"})


def test_error_mapping_covers_every_leaf_once(package_dir: Path) -> None:
    """Run inside the installed package's own venv (dify_plugin needs Python 3.12)."""
    leaves = [c.__name__ for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.TritonMMError)]
    script = f"""
import tritonmm.errors as e
from models.common import ERROR_MAPPING
hits = {{}}
for name in {leaves!r}:
    cls = getattr(e, name)
    if cls is e.TritonMMError:
        continue
    buckets = [k.__name__ for k, v in ERROR_MAPPING.items() if any(issubclass(cls, t) for t in v)]
    hits[name] = buckets
bad = {{k: v for k, v in hits.items() if len(v) != 1}}
assert not bad, bad
print(sorted(hits.items()))
"""
    result = subprocess.run(
        [str(package_dir / ".venv/bin/python"), "-c", script], cwd=package_dir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "InvalidInput', ['InvokeBadRequestError']" in result.stdout
    assert "RequestTimeout', ['InvokeConnectionError']" in result.stdout


@pytest.fixture(scope="module")
def package_dir(plugin) -> Path:
    return plugin.plugin_dir


def test_settings_from_dify_strings() -> None:
    s = ServerSettings.from_credentials({"server_url": "triton:8000/", "connect_timeout": "2.5", "read_timeout": ""})
    assert s.http_url == "http://triton:8000"
    assert s.grpc_target == "triton:8001"
    assert s.timeouts.connect == 2.5 and s.timeouts.read == 120.0


@pytest.mark.parametrize(
    ("creds", "fragment"),
    [
        ({}, "'server_url' is required"),
        ({"server_url": "ftp://x"}, "must be an http(s) URL"),
        ({"server_url": "http://x", "read_timeout": "soon"}, "'read_timeout' must be a number"),
        ({"server_url": "http://x", "grpc_endpoint": "x"}, "must be host:port"),
    ],
)
def test_settings_errors_name_the_field(creds: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        ServerSettings.from_credentials(creds)
    assert fragment in str(raised.value)


def test_core_never_imports_dify_plugin() -> None:
    """Read every import in the core, lazy ones inside functions included."""
    offenders = [
        f"{path.relative_to(ROOT)}:{imp.line}"
        for path in python_files(ROOT / "tritonmm")
        for imp in imports_of(path, module_name(path, ROOT))
        if imp.module.split(".")[0] == "dify_plugin"
    ]
    assert not offenders, f"the core imports dify_plugin: {offenders}"


# A dify_plugin that records who imported it, first on the path of a fresh interpreter.
STAND_IN = """
import traceback
IMPORTED_FROM = "".join(traceback.format_stack(limit=12))
"""
IMPORT_EVERY_CORE_MODULE = r"""
import importlib, pkgutil, sys
import tritonmm
names = [m.name for m in pkgutil.walk_packages(tritonmm.__path__, "tritonmm.")]
for name in names:
    importlib.import_module(name)
stand_in = sys.modules.get("dify_plugin")
assert stand_in is None, "importing the core imported dify_plugin:\n" + stand_in.IMPORTED_FROM
print(len(names), "modules")
"""


def test_importing_every_core_module_loads_no_dify_plugin(tmp_path: Path) -> None:
    (tmp_path / "dify_plugin").mkdir()
    (tmp_path / "dify_plugin" / "__init__.py").write_text(STAND_IN)
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_CORE_MODULE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) >= len(list(python_files(ROOT / "tritonmm"))) - 1  # every module ran


def test_contract_page_names_every_tensor_and_key() -> None:
    page = (ROOT / "docs" / "model-contract.md").read_text()
    keys = [v for k, v in vars(contract).items() if k.startswith("KEY_")]
    tensors = [s.name for inputs, outputs in contract.TASK_SPECS.values() for s in (*inputs, *outputs)]
    for name in tensors + keys + [contract.INVALID_INPUT_PREFIX]:
        assert f"`{name}" in page, name


def test_config_mismatch_names_the_tensor() -> None:
    good = {
        "input": [
            {"name": s.name, "data_type": s.triton_dtype, "dims": list(s.dims), "optional": s.optional}
            for s in contract.RERANK_INPUTS
        ],
        "output": [
            {"name": s.name, "data_type": s.triton_dtype, "dims": list(s.dims)} for s in contract.RERANK_OUTPUTS
        ],
    }
    assert contract.config_mismatch(good, contract.RERANK_INPUTS, contract.RERANK_OUTPUTS) is None
    good["output"][0]["data_type"] = "TYPE_FP16"
    problem = contract.config_mismatch(good, contract.RERANK_INPUTS, contract.RERANK_OUTPUTS)
    assert problem and "output SCORE" in problem and "TYPE_FP32" in problem
