"""Workers that never embed never import torch (nor sentence-transformers / transformers).

Each case runs in a fresh interpreter: the CLI's module chain, then the worker's handler (or the gateway
app) built the way `ragstream worker NAME` / `ragstream gateway serve` build it, then a look at
`sys.modules`. In one test process some other test would already have imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "sentence_transformers", "transformers")

_PRELUDE = """
import json, resource, sys
import application.cli.main  # the `ragstream` command's whole import chain
from ragstream.settings import Settings
"""

_WORKER = """
from application.compose import wire
from ragstream.runtime.deps import Deps

class _NoProducer:  # nothing is sent while building
    def send_many(self, *a, **k): raise AssertionError("no sends while building")

base = Settings()
s = base.model_copy(update={{"serving": base.serving.model_copy(update={{"rerank": {rerank!r}}})}})
wired = wire({name!r}, Deps(s), _NoProducer())
"""

_GATEWAY = """
from gateway.app import create_app
create_app(Settings())
"""

_REPORT = """
heavy = [m for m in {heavy!r} if m in sys.modules]
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({{"heavy": heavy, "max_rss_mb": rss_mb}}))
"""

CASES = {
    "normalizer": _WORKER.format(name="normalizer", rerank="lexical"),
    "chunker": _WORKER.format(name="chunker", rerank="lexical"),
    "rerank-none": _WORKER.format(name="rerank", rerank="none"),
    "rerank-lexical": _WORKER.format(name="rerank", rerank="lexical"),
    "gateway": _GATEWAY,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_worker_does_not_import_torch(case: str) -> None:
    code = textwrap.dedent(_PRELUDE + CASES[case] + _REPORT.format(heavy=HEAVY))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"{case} imported {report['heavy']}"
