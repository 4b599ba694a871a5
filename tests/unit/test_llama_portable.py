"""The local model server's llama.cpp is the portable build: nothing beyond AVX2/FMA/F16C compiled in, so
it runs on every x86-64 host of this machine kind (a native build on an AMX host faulted on the first
completion)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_the_build_settings_pin_a_portable_baseline() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["config-settings-package"]
    llama = cfg["llama-cpp-python"]
    assert llama["cmake.define.GGML_NATIVE"] == "OFF"
    for off in ("GGML_AVX512", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert llama[f"cmake.define.{off}"] == "OFF", off
    for on in ("GGML_AVX2", "GGML_FMA", "GGML_F16C"):
        assert llama[f"cmake.define.{on}"] == "ON", on


def test_the_installed_library_was_built_that_way() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info, info
    assert "AVX512" not in info and "AMX" not in info, f"a non-portable build is installed: {info}"
