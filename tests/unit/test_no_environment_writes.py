"""No code writes the process environment: settings are read once at start-up and passed down, so a
constructor that sets a variable (HF_HUB_OFFLINE was one) would change every later reader in the process.

Child processes get their environment as an explicit dict (application/stack builds `env = dict(os.environ)`
and passes it), which this check allows: only `os.environ` itself, `os.putenv` and `os.unsetenv` count.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "ragstream", "consumers", "gateway", "producers", "evals", "application", "bench")
MUTATORS = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _is_environ(node: ast.AST) -> bool:
    """`os.environ` (or a bare `environ` imported from os)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def environment_writes(source: str, filename: str = "<src>") -> list[int]:
    """Line numbers where `source` writes the process environment."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source, filename)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        if any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            fn = node.func
            if fn.attr in MUTATORS and _is_environ(fn.value):
                lines.append(node.lineno)
            if fn.attr in ("putenv", "unsetenv") and isinstance(fn.value, ast.Name) and fn.value.id == "os":
                lines.append(node.lineno)
    return lines


def test_no_module_writes_the_environment() -> None:
    found: list[str] = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            for line in environment_writes(path.read_text(), str(path)):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert not found, "writes to the process environment:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "writes"),
    [
        ("import os\nos.environ['A'] = '1'\n", True),
        ("import os\nos.environ.setdefault('HF_HUB_OFFLINE', '1')\n", True),
        ("import os\nos.environ.update(A='1')\n", True),
        ("import os\ndel os.environ['A']\n", True),
        ("import os\nos.putenv('A', '1')\n", True),
        ("from os import environ\nenviron['A'] = '1'\n", True),
        ("import os\nenv = dict(os.environ)\nenv.update(A='1')\nenv['B'] = '2'\n", False),
        ("import os\nx = os.environ.get('A')\n", False),
    ],
)
def test_the_check_sees_writes_and_not_copies(source: str, writes: bool) -> None:
    assert bool(environment_writes(source)) is writes


def test_the_cross_encoder_reranker_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Import the libraries first: torch sets a few variables of its own at import, which is not ours.
    import sentence_transformers  # noqa: F401

    from ragstream.adapters.embedder import packaged_model_path
    from ragstream.adapters.reranker import CrossEncoderReranker

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    # A bi-encoder checkpoint loads as a cross-encoder (fresh head): enough to see construction and scoring.
    reranker = CrossEncoderReranker(str(packaged_model_path()))
    assert len(reranker.score("a question", ["one passage", "another"])) == 2
    with pytest.raises(OSError):  # never reaches for a hub: a model id not in the cache fails at once
        CrossEncoderReranker("ragstream-tests/no-such-cross-encoder")
    assert dict(os.environ) == before
