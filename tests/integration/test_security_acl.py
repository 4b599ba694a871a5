"""ACL changes are events, always: re-publishing a folder with other groups revokes and grants access.

On the real stack (Kafka + Weaviate) through the whole chain: ingestion (normalize, chunk, embed/index)
and serving (retrieval, rerank, generation with the extractive stub, whose prompt is captured). A staff
user reads a staff document; `ragstream publish DIR --group finance` (same content) must report one ACL
change and, within seconds, the staff user no longer gets the document in retrieval results, the prompt,
the answer or the citations, while a finance user does; widening to staff + finance grants it back.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from application.cli.main import app as cli
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime.deps import Deps
from ragstream.runtime.queries import QueryClient
from schemas.ingestion import Acl
from tests.support.pipeline import Harness, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
CANARY = "BLUEHERON-4471"
DOC = "merger.md"
TEXT = f"# Merger\n\nThe secret merger code name is {CANARY}. The merger closes in March.\n"
QUESTION = "What is the secret merger code name?"
REVOCATION_LIMIT_S = 10.0


class Capture:
    def __init__(self) -> None:
        self.prompts: dict[str, str] = {}

    def __call__(self, query_id: str, messages: list[dict[str, str]]) -> None:
        self.prompts[query_id] = "\n".join(m["content"] for m in messages)


def _sees(result: dict[str, Any], capture: Capture) -> dict[str, bool]:
    """Where the document reached this caller: results, prompt, answer, citations."""
    final = result["final"]
    retrieved = result["retrieved"]
    passages = retrieved.passages if retrieved else ()
    return {
        "results": any(p.document_id == DOC or CANARY in p.text for p in passages),
        "prompt": CANARY in capture.prompts.get(final.query_id, ""),
        "answer": CANARY in (getattr(final, "answer", "") or ""),
        "citations": any(c.document_id == DOC for c in getattr(final, "citations", ())),
    }


@pytest.fixture
async def chain(settings, unique, embedder, tmp_path):
    s = isolated_pipeline_settings(settings, unique)
    capture = Capture()
    deps = Deps(s, llm=ExtractiveStub(), on_prompt=capture)
    async with Harness(s, embedder, ALL, deps=deps, tmp=tmp_path) as h, QueryClient(s) as client:
        yield h, client, capture, s


def _cli_publish(monkeypatch, s, state_dir: Path, folder: Path, tenant: str, *groups: str) -> str:
    """`ragstream publish FOLDER --tenant T --group G... --wait`, as a user runs it, on this test's
    isolated topics and manifest dir (the manifests `Harness.publish` keeps); returns what it printed."""
    import application.cli.publish as publish_cmd

    monkeypatch.setattr(publish_cmd, "settings", lambda: s)
    monkeypatch.setattr(publish_cmd, "stack_home", lambda _s: state_dir / "stack")
    args = ["publish", str(folder), "--tenant", tenant, "--wait", "--timeout", "120"]
    for g in groups:
        args += ["--group", g]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    return " ".join(r.stdout.split())


async def test_acl_only_republish_revokes_and_grants(chain, tmp_path, monkeypatch) -> None:
    h, client, capture, s = chain
    tenant = "sec"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / DOC).write_text(TEXT)
    staff = (tenant, "sam", ("staff",))
    finance = (tenant, "fay", ("finance",))

    first = await h.publish(folder, tenant, groups=("staff",))
    assert (first["new"], first["acl_changed"], first["searchable"]) == (1, 0, 1)
    seen = _sees(await client.ask(*staff, QUESTION), capture)
    assert seen["results"] and seen["prompt"] and seen["citations"], seen
    assert not any(_sees(await client.ask(*finance, QUESTION), capture).values())

    # Narrow: only the ACL changed. One AclChanged, no re-embedding, then the staff user loses it.
    chunk_ids = set(h.store.get_state(tenant, DOC).chunk_ids)
    t0 = time.monotonic()
    out = await asyncio.to_thread(_cli_publish, monkeypatch, s, tmp_path / "state", folder, tenant, "finance")
    t_receipt = time.monotonic() - t0
    print(f"narrow: {out}")
    assert "0 new, 0 changed, 1 acl changed, 0 removed, 0 unchanged -> 1 events" in out
    assert re.search(r"searchable 1/1; chunks written 0, deleted 0, acl applied 1;", out), out
    while True:
        seen = _sees(await client.ask(*staff, QUESTION), capture)
        if not any(seen.values()):
            break
        assert time.monotonic() - t0 < 30, f"revocation not enforced within 30 s: {seen}"
        await asyncio.sleep(0.1)
    t_revoked = time.monotonic() - t0
    state = h.store.get_state(tenant, DOC)
    assert state.acl_groups == ("finance",) and set(state.chunk_ids) == chunk_ids, "no re-embedding"
    seen = _sees(await client.ask(*finance, QUESTION), capture)
    assert seen["results"] and seen["prompt"] and seen["citations"], seen

    # The same publish again: nothing changed, nothing sent.
    again = await h.publish(folder, tenant, groups=("finance",))
    assert (again["acl_changed"], again["unchanged"], again["published"]) == (0, 1, 0)

    # Widen: staff + finance -> the staff user gains it again, finance keeps it.
    t1 = time.monotonic()
    out = await asyncio.to_thread(
        _cli_publish, monkeypatch, s, tmp_path / "state", folder, tenant, "staff", "finance"
    )
    print(f"widen: {out}")
    assert "0 new, 0 changed, 1 acl changed, 0 removed, 0 unchanged -> 1 events" in out
    while True:
        seen = _sees(await client.ask(*staff, QUESTION), capture)
        if seen["results"] and seen["prompt"] and seen["citations"]:
            break
        assert time.monotonic() - t1 < 30, f"grant not applied within 30 s: {seen}"
        await asyncio.sleep(0.1)
    t_granted = time.monotonic() - t1
    seen = _sees(await client.ask(*finance, QUESTION), capture)
    assert seen["results"] and seen["prompt"] and seen["citations"], seen
    print(
        f"publish -> AclChanged receipt {t_receipt:.2f}s, publish -> revoked {t_revoked:.2f}s, "
        f"widen -> granted {t_granted:.2f}s"
    )
    assert t_revoked < REVOCATION_LIMIT_S


async def test_sdk_same_content_upsert_with_new_acl_revokes(chain, tmp_path) -> None:
    """The SDK's re-publish path: upserting the same bytes with another ACL must not be deduped away."""
    h, client, capture, s = chain
    tenant = "sdk"
    staff = (tenant, "sam", ("staff",))
    async with DocumentPublisher(s) as pub:
        await pub.upsert(
            tenant, DOC, content=TEXT.encode(), mime_type="text/markdown", acl=Acl(groups=("staff",))
        )
        await eventually(lambda: h.store.has_tenant(tenant) and h.store.get_state(tenant, DOC))
        chunk_ids = set(h.store.get_state(tenant, DOC).chunk_ids)
        assert _sees(await client.ask(*staff, QUESTION), capture)["prompt"]
        t0 = time.monotonic()
        await pub.upsert(
            tenant, DOC, content=TEXT.encode(), mime_type="text/markdown", acl=Acl(groups=("finance",))
        )
        while any(_sees(await client.ask(*staff, QUESTION), capture).values()):
            assert time.monotonic() - t0 < 30, "same-content upsert with a new ACL did not revoke"
            await asyncio.sleep(0.1)
    state = h.store.get_state(tenant, DOC)
    assert state.acl_groups == ("finance",) and set(state.chunk_ids) == chunk_ids
    assert _sees(await client.ask(tenant, "fay", ("finance",), QUESTION), capture)["prompt"]
