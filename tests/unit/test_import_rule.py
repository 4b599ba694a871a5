"""The import rule, read from the source with `ast` (function-level imports included):

    schemas <- ragstream (settings, core, ports, adapters, runtime, indexing, generations)
            <- planes (consumers, gateway, producers) <- evals <- application <- bench, tests

Planes talk only through Kafka topics and the store, so no plane imports another, and no consumer module
imports another consumer module. `ragstream.core` does no I/O. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RANK = {
    "schemas": 0,
    "ragstream": 1,
    "consumers": 2,
    "gateway": 2,
    "producers": 2,
    "evals": 3,
    "application": 4,
    "bench": 5,
    "tests": 5,
}
PLANES = {"consumers", "gateway", "producers"}
# What "no I/O" means for the pure core: no network, process, file-system or broker/store clients.
IO_MODULES = {
    "aiokafka",
    "asyncio",
    "glob",
    "http",
    "httpx",
    "os",
    "pathlib",
    "requests",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "subprocess",
    "tempfile",
    "urllib",
    "weaviate",
}
IO_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes"}
PURE_NAMES = {"pathlib.PurePosixPath", "pathlib.PurePath"}  # path arithmetic, never touches a disk


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (or package.name)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def edges_of(path: Path, source: str | None = None) -> list[Edge]:
    source = source or module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    out: list[Edge] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [Edge(source, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out += [Edge(source, f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def python_files() -> list[Path]:
    files: list[Path] = []
    for top in RANK:
        files += [p for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts]
    return sorted(files)


def consumer_module(name: str) -> str | None:
    """`consumers.<plane>.<module>` of a name inside a consumer module (None for packages)."""
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "consumers" and len(parts) >= 3 else None


def violation(edge: Edge) -> str | None:
    src_top, dst_top = edge.source.split(".")[0], edge.target.split(".")[0]
    if dst_top not in RANK or src_top == dst_top == "tests":
        return None
    if RANK[dst_top] > RANK[src_top]:
        return f"{src_top} (layer {RANK[src_top]}) imports {dst_top} (layer {RANK[dst_top]})"
    if src_top in PLANES and dst_top in PLANES and src_top != dst_top:
        return f"plane {src_top} imports plane {dst_top} (planes meet only on topics and the store)"
    a, b = consumer_module(edge.source), consumer_module(edge.target)
    if a and b and a != b and b.split(".")[2] != "__init__":
        # `consumers.serving.retrieval` -> `consumers.serving.rerank.X`: a consumer leaning on another
        return f"consumer {a} imports consumer {b}"
    return None


def all_edges() -> list[Edge]:
    return [e for f in python_files() for e in edges_of(f)]


def test_no_import_points_against_the_layers() -> None:
    bad = [f"{e.source}:{e.line} -> {e.target}: {why}" for e in all_edges() if (why := violation(e))]
    assert not bad, "imports against the rule (docs/ARCHITECTURE.md):\n" + "\n".join(bad)


def test_the_application_layer_is_not_inside_the_shared_runtime() -> None:
    assert not (ROOT / "ragstream" / "cli").exists() and not (ROOT / "ragstream" / "stack").exists()
    for name in ("app.py", "serving.py", "pipeline.py"):
        assert not (ROOT / "ragstream" / "runtime" / name).exists(), name
    assert (ROOT / "application" / "compose.py").is_file()


def test_core_does_no_io() -> None:
    bad: list[str] = []
    for path in sorted((ROOT / "ragstream" / "core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for e in edges_of(path):
            if e.target.split(".")[0] in IO_MODULES and e.target not in PURE_NAMES:
                bad.append(f"{e.source}:{e.line} imports {e.target}")
            if e.target.startswith("ragstream.") and not e.target.startswith("ragstream.core"):
                bad.append(f"{e.source}:{e.line} imports {e.target} (core depends on nothing but core)")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in IO_CALLS:
                    bad.append(f"{module_name(path)}:{node.lineno} calls {name}()")
    assert not bad, "\n".join(bad)


def test_every_consumer_module_has_the_same_shape() -> None:
    from application.compose import MODULES

    for name, module in MODULES.items():
        doc = module.__doc__ or ""
        for field in ("In:", "Out:", "Group:", "Ack:", "Idempotency:"):
            assert field in doc, f"{name}: header docstring lacks {field!r}"
        assert module.SPEC.name == name and callable(module.build_handler)
        assert isinstance(module.NEEDS, tuple)


# --- the checker itself must be able to fail ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "bad"),
    [
        ("ragstream.generations.build", "consumers.ingestion.embedder.Indexer", True),
        ("ragstream.generations.gate", "evals.runner.run_set", True),
        ("evals.runner", "application.cli.common.err", True),
        ("gateway.app", "consumers.serving.generation.Generator", True),
        ("consumers.serving.retrieval", "consumers.ingestion.embedder.TRANSIENT", True),
        ("schemas.topics", "ragstream.settings.Settings", True),
        ("consumers.serving.retrieval", "ragstream.indexing.indexer.embed_text", False),
        ("application.compose", "consumers.serving.retrieval", False),
        ("evals.asking", "gateway.client.GatewayClient", False),
        ("tests.unit.x", "tests.support.pipeline.Harness", False),
        ("consumers.serving.retrieval", "consumers.serving.retrieval.Retriever", False),
    ],
)
def test_the_rule_catches_what_it_should(source: str, target: str, bad: bool) -> None:
    assert (violation(Edge(source, target, 1)) is not None) is bad


def test_function_level_and_relative_imports_are_seen(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from evals.runner import run_set\n    from .settings import Settings\n")
    found = {(e.target, violation(e) is not None) for e in edges_of(probe, "ragstream.probe")}
    assert ("evals.runner.run_set", True) in found
    assert ("ragstream.settings.Settings", False) in found
