"""The leak suite on the real stack at CI scale (stub LLM): it passes on the real configuration; with the
in-search ACL filter off the second authorization check still holds; with both off it catches the leak."""

from __future__ import annotations

import pytest

from application.pipeline import LocalPipeline
from consumers.serving import generation
from evals.leaks import run_leaks
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime.deps import Deps

pytestmark = pytest.mark.integration


def _deps(settings, embedder, **changes: bool) -> Deps:
    return Deps(settings, embedder=embedder, llm=ExtractiveStub(), **changes)


async def test_leak_suite_passes_through_the_gateway(isolated, embedder) -> None:
    report = await run_leaks(
        isolated, pipeline="local", deps=_deps(isolated, embedder), launch=LocalPipeline, via="gateway"
    )
    s = report.summary()
    assert report.passed, (report.leaks, report.controls_failed, report.errors)
    assert s["probes"] >= 30 and s["leaks"] == 0 and s["filter_breaches"] == 0
    assert s["controls"] == 10 and s["controls_failed"] == 0  # every canary was reachable by its owner
    assert s["via"] == "gateway" and all(r.probe.id and r.error is None for r in report.results)
    assert set(s["by_kind"]) >= {"direct", "cross-group", "cross-tenant", "private", "injection", "revoked"}
    print(f"leak suite: {s['probes']} probes in {s['elapsed_s']}s")


async def test_second_check_holds_without_the_search_filter(isolated, embedder) -> None:
    report = await run_leaks(
        isolated,
        pipeline="local",
        deps=_deps(isolated, embedder, acl_in_search=False),
        launch=LocalPipeline,
    )
    s = report.summary()
    assert s["filter_breaches"] > 0, "the filter was off: the search must have returned canaries"
    assert s["leaks"] == 0, report.leaks
    assert report.passed and s["controls_failed"] == 0


async def test_suite_catches_the_leak_with_both_checks_off(isolated, embedder, monkeypatch) -> None:
    # Both layers off: no ACL filter in the search, no authorization before the prompt (passage ACL and
    # the documents' live ACL state).
    monkeypatch.setattr(generation, "passage_allowed", lambda _p, _c: True)
    report = await run_leaks(
        isolated,
        pipeline="local",
        deps=_deps(isolated, embedder, acl_in_search=False, second_check=False),
        launch=LocalPipeline,
        via="gateway",
    )
    s = report.summary()
    assert not report.passed and s["leaks"] > 0
    surfaces = {leak["surface"] for leak in report.leaks}
    assert "prompt" in surfaces and "answer" in surfaces
    assert s["by_kind"]["direct"]["leaking"] > 0 and s["by_kind"]["revoked"]["leaking"] > 0
    # Tenants are separate Weaviate tenants: even with both checks off, what a caller sees of the
    # suite's canaries comes from its own tenant (cross-tenant probes can still leak own-tenant pages).
    probes = {r.probe.id: r.probe for r in report.results}
    for leak in report.leaks:
        assert leak["document"].startswith(probes[leak["probe"]].tenant + "/"), leak


async def test_leak_suite_passes_on_every_surface(isolated, embedder) -> None:
    # Every probe through the native API, the OpenAI-compatible API (streamed) and the MCP tools, and
    # every console page read by each probe's caller.
    report = await run_leaks(
        isolated, pipeline="local", deps=_deps(isolated, embedder), launch=LocalPipeline, via="all"
    )
    s = report.summary()
    assert report.passed, (report.leaks, report.controls_failed, report.errors)
    assert s["leaks"] == 0 and s["filter_breaches"] == 0 and s["controls_failed"] == 0
    assert s["controls"] == 40  # each canary reached by its owner on each of the four surfaces
    assert set(s["by_via"]) == {"gateway", "openai", "mcp", "console"}
    assert len({v["probes"] for v in s["by_via"].values()}) == 1 and s["by_via"]["mcp"]["probes"] >= 30
    print(f"leak suite, every surface: {s['probes']} probes in {s['elapsed_s']}s")


async def test_suite_catches_the_leak_on_the_openai_and_mcp_surfaces(isolated, embedder, monkeypatch) -> None:
    # Both checks off: the canaries reach what OpenAI and MCP clients receive, and the suite says so.
    monkeypatch.setattr(generation, "passage_allowed", lambda _p, _c: True)
    report = await run_leaks(
        isolated,
        pipeline="local",
        deps=_deps(isolated, embedder, acl_in_search=False, second_check=False),
        launch=LocalPipeline,
        via="all",
    )
    s = report.summary()
    assert not report.passed
    assert s["by_via"]["openai"]["leaking"] > 0 and s["by_via"]["mcp"]["leaking"] > 0
    caller_side = {(leak["via"], leak["surface"]) for leak in report.leaks}
    assert ("openai", "answer") in caller_side and ("mcp", "answer") in caller_side
