"""The web console in headless Chromium (Debian's package, driven by Playwright) on the real stack.

Real Kafka and Weaviate, the six consumers in process (a stub model: extractive, except that a question
about lobster gets an unsupported answer, which the groundedness scorers flag onto the review topic), the
gateway under uvicorn. An acme operator/reviewer signs in, asks and sees the streamed answer and its
citations, reads every page (documents with lineage, dead letters, generations, eval reports with plots,
the review queue) and marks the flagged answer; a globex user with the same groups then visits every page
and sees none of acme's documents.

Screenshots: `<pytest basetemp>/console-screenshots/*.png` (e.g. /tmp/pytest-of-$USER/pytest-N/; pass
`--basetemp DIR` to choose). Chromium is `/usr/bin/chromium` (`scripts/bootstrap.sh --test-tools`
installs it with apt); without it the test skips, saying so. Never `playwright install`.
"""

from __future__ import annotations

import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.ports import Usage
from ragstream.runtime.deps import Deps
from ragstream.settings import ConsoleSettings, Settings
from schemas.ingestion import Acl
from tests.support.pipeline import Harness, document_indexed, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
CANARY = "QUOKKA-5521"
DOCS = {
    (
        "acme",
        "handbook.md",
    ): "# Handbook\n\nThe acme cafeteria opens at eight in the morning and closes at three.",
    ("acme", "travel.md"): "# Travel\n\nThe acme travel desk books economy flights for every trip.",
    ("globex", "launch.md"): f"# Launch\n\nThe globex launch code name is {CANARY} and it happens in May.",
}
GROUPS = ["everyone", "ragstream-operators", "ragstream-reviewers"]


class FlaggableStub(ExtractiveStub):
    """Extractive, except a lobster question gets a claim no passage supports (and cites passage 1)."""

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, usage: Usage
    ) -> AsyncIterator[str]:
        if "lobster" not in messages[-1]["content"].lower():
            async for piece in super().stream(messages, max_tokens, usage):
                yield piece
            return
        usage.prompt_tokens, usage.completion_tokens = 50, 12
        yield "The cafeteria serves free lobster dinners every Monday evening [1]."


@dataclass
class Env:
    url: str
    keys: dict[str, str]
    shots: Path
    h: Harness


def _playwright() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: run scripts/bootstrap.sh --test-tools (installs Debian's chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (uv sync installs the dev group)")
    return async_playwright


def _write_eval_run(root: Path) -> None:
    """A stored eval run of acme, as `ragstream eval run` writes it (result.json + its SVG plots)."""
    from evals.report import write_run

    questions = [
        {
            "id": f"q{i}",
            "question": f"acme handbook question {i}",
            "tenant": "acme",
            "request_class": "interactive",
            "judged": True,
            "ndcg_at_10": score,
            "groundedness": 1.0,
            "latency_ms": 120.0 + i,
            "ok": score > 0.5,
        }
        for i, score in enumerate((1.0, 0.63, 0.0, 1.0))
    ]
    result = {
        "set": "acme-handbook",
        "run_id": "20261202T000000-e2e000",
        "passed": True,
        "failures": [],
        "metrics": {"ndcg_at_10": 0.66, "recall_at_5": 0.75},
        "questions": questions,
        "diff": {},
    }
    write_run(result, root=root)


@pytest.fixture(scope="module")
async def env(settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    _playwright()
    keys = {t: f"rs-{t}-{secrets.token_urlsafe(24)}" for t in ("acme", "globex")}
    base = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    api_keys = {k: {"tenant": t, "subject": f"{t}-admin", "groups": GROUPS} for t, k in keys.items()}
    tmp = tmp_path_factory.mktemp("console")
    _write_eval_run(tmp / "evals")
    s = base.model_copy(
        update={
            "auth": base.auth.model_copy(update={"api_keys": api_keys}),
            "console": ConsoleSettings(curated_dir=tmp / "curated", eval_reports_dir=tmp / "evals"),
        }
    )
    shots = tmp_path_factory.getbasetemp() / "console-screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    async with Harness(s, embedder, ALL, deps=Deps(s, llm=FlaggableStub()), tmp=tmp) as h:
        async with DocumentPublisher(s) as pub:
            for (tenant, doc), text in DOCS.items():
                await pub.upsert(
                    tenant,
                    doc,
                    content=text.encode(),
                    mime_type="text/markdown",
                    acl=Acl(groups=("everyone",)),
                )
        for tenant, doc in DOCS:
            await eventually(lambda t=tenant, d=doc: document_indexed(h, t, d))
        async with serve_in_process(create_app(s)) as url:
            yield Env(url, keys, shots, h)


async def _sign_in(page: Any, env: Env, tenant: str) -> None:
    await page.goto(f"{env.url}/console/")
    await page.fill("#token", env.keys[tenant])
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#ask:not([hidden])")
    await page.locator("#who", has_text="reviewer").wait_for()


async def _visit(page: Any, name: str) -> str:
    """Open a page tab; its text once loaded (rows, or the empty note, or an error)."""
    await page.click(f"nav .tab[data-page={name}]")  # clears the rows at once, then loads
    # Locators only: the console's CSP (no eval) refuses Playwright's string predicates.
    await page.locator(f"#{name}-rows > *, #page-error:not(:empty)").first.wait_for()
    assert await page.text_content("#page-error") == "", name
    return await page.inner_text(f"#{name}")


async def test_console_in_headless_chromium(env: Env) -> None:
    async_playwright = _playwright()
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(env.shots.parent / f"chromium-profile-{uuid.uuid4().hex[:8]}"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        outside: list[str] = []
        ctx.on(
            "request",
            lambda r: (
                None if r.url.startswith(env.url) or r.url.startswith("blob:") else outside.append(r.url)
            ),
        )
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            await _acme_session(page, env)
            await page.click("#signout")
            await _globex_session(page, env)
        finally:
            await ctx.close()
    assert outside == [], f"the console fetched from elsewhere: {outside}"


async def _acme_session(page: Any, env: Env) -> None:
    await _sign_in(page, env, "acme")
    await page.screenshot(path=str(env.shots / "01-signed-in.png"))

    # Ask: the answer streams in, then its citations (document, version, chunk) appear.
    await page.fill("#question", "When does the acme cafeteria open?")
    await page.click("#ask-form button[type=submit]")
    await page.wait_for_selector("#citations li.citation", timeout=60_000)
    answer = await page.text_content("#answer")
    assert "eight" in (answer or "")
    cite = await page.text_content("#citations li.citation")
    chunk = re.search(r"chunk (\S+)$", cite or "")
    assert cite and "handbook.md" in cite and chunk and chunk.group(1) in env.h.chunk_ids("acme")
    assert "query" in (await page.text_content("#meta") or "")
    await page.screenshot(path=str(env.shots / "02-answer-with-citations.png"))

    # A flagged answer (unsupported claim) lands in the review queue.
    await page.fill("#question", "Does the cafeteria serve lobster?")
    await page.click("#ask-form button[type=submit]")
    await page.locator("#meta", has_text="query").wait_for(timeout=60_000)

    docs = await _visit(page, "documents")
    assert "handbook.md" in docs and "travel.md" in docs and "everyone" in docs
    await page.screenshot(path=str(env.shots / "03-documents.png"))
    await _visit(page, "dead-letters")
    await _visit(page, "generations")
    evals = await _visit(page, "evals")
    assert "acme-handbook" in evals and "ndcg_at_10" in evals
    await page.locator("#evals img[src^='blob:']").first.wait_for()
    await page.screenshot(path=str(env.shots / "04-eval-report.png"), full_page=True)

    for _ in range(60):  # the flag travels generation -> review topic -> the gateway's queue
        reviews = await _visit(page, "reviews")
        if "lobster" in reviews:
            break
        await page.wait_for_timeout(500)
    assert "lobster" in reviews and "unsupported_citation" in reviews
    await page.screenshot(path=str(env.shots / "05-review-queue.png"))
    await page.check("#reviews-rows .card input[type=checkbox]")
    await page.click("#reviews-rows .card button:has-text('Right')")
    await page.locator("#reviews-rows .card", has_text="lobster").wait_for(state="detached")
    curated = (env.h.tmp or Path()) / "curated" / "acme.jsonl"
    assert "lobster" in curated.read_text()


async def _globex_session(page: Any, env: Env) -> None:
    await _sign_in(page, env, "globex")
    await page.fill("#question", "When does the acme cafeteria open?")
    await page.click("#ask-form button[type=submit]")
    await page.locator("#meta", has_text="query").wait_for(timeout=60_000)
    seen = [await page.inner_text("#ask")]
    for name in ("documents", "dead-letters", "generations", "evals", "reviews"):
        seen.append(await _visit(page, name))
        await page.screenshot(path=str(env.shots / f"06-globex-{name}.png"))
    text = "\n".join(seen)
    assert "launch.md" in text  # its own document
    for acme in ("handbook.md", "travel.md", "cafeteria opens", "acme-handbook", "lobster"):
        assert acme not in text, acme
