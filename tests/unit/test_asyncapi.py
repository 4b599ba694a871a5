"""The checked-in AsyncAPI document is what the consumer declarations say, and the official parser accepts it.

The parser is `@asyncapi/parser` (node), installed once by deploy/tools/fetch-tools.sh into
~/.cache/ragstream/tools/asyncapi (scripts/bootstrap.sh runs it; this test runs it when missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from application import asyncapi
from application.compose import MODULES
from ragstream.settings import default_cache_dir
from schemas.topics import TOPICS, written_topics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FETCH = ROOT / "deploy" / "tools" / "fetch-tools.sh"
VALIDATE = ROOT / "deploy" / "tools" / "asyncapi-validate.mjs"


def parser_modules() -> Path:
    # The same cache as fetch-tools.sh: ${XDG_CACHE_HOME:-~/.cache}/ragstream/tools.
    modules = default_cache_dir() / "tools" / "asyncapi" / "node_modules"
    if not (modules / "@asyncapi" / "parser" / "package.json").is_file():
        subprocess.run(["bash", str(FETCH)], check=True, stdout=subprocess.DEVNULL)
    return modules


def official_parser(path: Path) -> tuple[int, list[dict[str, object]]]:
    node = shutil.which("node")
    assert node, "node is not on PATH: the official AsyncAPI parser is a node package"
    run = subprocess.run(
        [node, str(VALIDATE), str(parser_modules()), str(path)], capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stderr
    return run.returncode, lines


def test_checked_in_document_is_generated_from_the_code() -> None:
    assert asyncapi.PATH.read_text(encoding="utf-8") == asyncapi.render(), (
        "schemas/generated/asyncapi.yaml is stale: run `ragstream contracts`"
    )


def test_the_official_parser_accepts_it() -> None:
    rc, lines = official_parser(asyncapi.PATH)
    *diagnostics, summary = lines
    assert rc == 0 and summary["valid"], diagnostics
    # Errors and warnings both fail: only hints (such as "a newer AsyncAPI version exists") may remain.
    assert summary["errors"] == 0 and summary["warnings"] == 0, diagnostics


def test_the_parser_check_can_fail(tmp_path: Path) -> None:
    doc = asyncapi.document()
    first = next(iter(doc["operations"].values()))
    first["channel"] = {"$ref": "#/channels/no-such-topic"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    rc, lines = official_parser(broken)
    assert rc == 1 and not lines[-1]["valid"]
    assert any("no-such-topic" in str(d.get("message")) for d in lines[:-1])


def test_every_consumer_is_bound_to_its_handler_and_topics() -> None:
    doc = asyncapi.document()
    ops = doc["operations"]
    for name, module in MODULES.items():
        spec = module.SPEC
        receive = ops[f"{name}.receive"]
        assert receive["channel"] == {"$ref": f"#/channels/{spec.topic}"}
        assert receive["bindings"]["kafka"]["groupId"]["enum"] == [spec.group]
        assert receive["x-handler"] == f"{module.__name__}.build_handler"
        assert module.build_handler.__module__ == module.__name__
        for topic in written_topics(spec):
            assert ops[f"{name}.send.{topic}"]["channel"] == {"$ref": f"#/channels/{topic}"}
        dlq = ops[f"{name}.deadLetter"]["channel"]["$ref"]
        assert dlq == f"#/channels/{TOPICS[spec.topic].dlq}"
    assert {o["x-consumer-module"] for o in ops.values()} == {m.__name__ for m in MODULES.values()}


def test_channels_carry_the_events_of_their_topic() -> None:
    doc = asyncapi.document()
    for name, spec in TOPICS.items():
        events = {m.__name__ for m in asyncapi.event_types(spec.model)}
        assert set(doc["channels"][name]["messages"]) == events
        for event in events:
            payload = doc["components"]["messages"][event]["payload"]
            assert payload == {"$ref": f"#/components/schemas/{event}"}
            assert event in doc["components"]["schemas"]


def test_each_module_header_names_the_topics_its_spec_declares() -> None:
    # The `Out:` line of a consumer's docstring and its SPEC (output + also_writes) must agree.
    for name, module in MODULES.items():
        out = next(line for line in (module.__doc__ or "").splitlines() if line.startswith("Out:"))
        named = set(re.findall(r"ragstream\.[a-z.-]+\.v\d+", out))
        assert named == set(written_topics(module.SPEC)), f"{name}: {out!r}"
