"""Backup -> wipe the data directory -> restore, on an isolated second Weaviate (never the shared one).

The same server binary the local stack builds, started on other ports with its own data and backup
directories. Two generations, a tenant pin and the live alias are written, a fixed query set is answered
through the real retrieval path, then `ragstream backup create`, the data directory is deleted, the server
restarted empty, `ragstream backup restore` run: the registry, the alias and every answer must be identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from application.stack.process import ProcessRecord, spawn, stop
from application.stack.secrets import localize
from application.stack.services import WeaviateService
from consumers.serving.retrieval import Retriever
from ragstream import names
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.store import WeaviateStore
from ragstream.adapters.weaviate_client import connect
from ragstream.generations.build import adopt_live, make_record
from ragstream.generations.record import GenerationEvent, SourceSnapshot
from ragstream.generations.registry import Registry, load_view
from ragstream.generations.routing import GenerationRouter
from ragstream.ports import ChunkRecord, DocumentState
from ragstream.settings import Settings, StackSettings, WeaviateSettings
from schemas.envelope import utcnow
from schemas.serving import Caller, QueryRequested, QuerySpec

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "application.cli.main"]
PORTS = {
    "weaviate_http_port": 38080,
    "weaviate_grpc_port": 38051,
    "weaviate_gossip_port": 37946,
    "weaviate_data_port": 37947,
    "weaviate_raft_port": 38300,
    "weaviate_raft_internal_rpc_port": 38301,
}
FACTS = {
    "acme": [
        "The acme vault code is AZURE-1001.",
        "Acme payroll runs on the fifth.",
        "Acme badges are blue.",
    ],
    "globex": [
        "The globex vault code is CRIMSON-2002.",
        "Globex payroll runs on the tenth.",
        "Globex badges are red.",
    ],
}
QUERIES = [
    ("acme", "What is the vault code?"),
    ("acme", "When does payroll run?"),
    ("globex", "What is the vault code?"),
    ("globex", "What colour are badges?"),
]


class IsolatedWeaviate:
    """One Weaviate server of the stack's build, on other ports, under `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        # Its own generated key, as `stack up` makes one for its home.
        self.settings = localize(
            Settings(
                stack=StackSettings(home=home, **PORTS),
                weaviate=WeaviateSettings(
                    url=f"http://127.0.0.1:{PORTS['weaviate_http_port']}",
                    grpc_port=PORTS["weaviate_grpc_port"],
                ),
            ),
            create=True,
        )
        self.service = WeaviateService(self.settings, home)
        self.record: ProcessRecord | None = None

    @property
    def data_dir(self) -> Path:
        return self.service.home / "data"

    def start(self) -> None:
        if not self.service.installed():
            pytest.fail(
                f"the Weaviate binary is missing ({self.service.binary}); run `ragstream stack up` once"
            )
        if self.service.healthy():
            pytest.fail(f"port {self.service.port} is taken: another Weaviate answers there")
        self.service.prepare()
        spec = self.service.spec()
        self.record = spawn(
            "weaviate-backup-test",
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            log=self.home / "weaviate.log",
            port=spec.port,
            version=spec.version,
        )
        deadline = time.monotonic() + 90
        while not self.service.healthy():
            if time.monotonic() > deadline:
                raise AssertionError((self.home / "weaviate.log").read_text()[-3000:])
            time.sleep(0.25)

    def stop(self) -> None:
        if self.record is not None:
            stop(self.record)
            self.record = None

    def env(self, settings: Settings) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RAGSTREAM_WEAVIATE__URL": settings.weaviate.url,
                "RAGSTREAM_WEAVIATE__GRPC_PORT": str(settings.weaviate.grpc_port),
                "RAGSTREAM_WEAVIATE__API_KEY": settings.weaviate.api_key.get_secret_value(),
                "RAGSTREAM_INDEX__GENERATION": settings.index.generation,
                "RAGSTREAM_GENERATIONS__REGISTRY_COLLECTION": settings.generations.registry_collection,
            }
        )
        return env


@pytest.fixture
def weaviate(tmp_path: Path) -> Iterator[IsolatedWeaviate]:
    server = IsolatedWeaviate(tmp_path / "stack")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _cli(env: dict[str, str], *args: str) -> dict:
    r = subprocess.run([*CLI, "backup", *args], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _fill(store: WeaviateStore, generation: str, embedder: HashEmbedder, words_per_chunk: int) -> None:
    store.ensure_schema()
    for tenant, facts in FACTS.items():
        store.ensure_tenant(tenant)
        text = " ".join(facts).split()
        pieces = [" ".join(text[i : i + words_per_chunk]) for i in range(0, len(text), words_per_chunk)]
        doc = f"{tenant}-facts.md"
        records = [
            ChunkRecord(
                chunk_id=str(names_uuid(tenant, generation, i)),
                document_id=doc,
                position=i,
                text=p,
                source_version="v1",
                acl_groups=("everyone",),
                generation=generation,
                embedding_model=embedder.model_id,
            )
            for i, p in enumerate(pieces)
        ]
        store.write_chunks(tenant, records, embedder.embed([r.text for r in records]))
        store.put_state(
            tenant,
            DocumentState(
                document_id=doc,
                live_version="v1",
                chunk_ids=tuple(r.chunk_id for r in records),
                acl_groups=("everyone",),
                generation=generation,
            ),
        )


def names_uuid(tenant: str, generation: str, i: int) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{generation}/{i}"))


def _answers(settings: Settings, embedder: HashEmbedder) -> list[tuple[str, list[str], list[float]]]:
    """The fixed query set through the real retrieval path (routing, alias, ACL, live-version check)."""
    client = connect(settings.weaviate)
    try:
        default = WeaviateStore(client, *names.collections(settings.index))
        router = GenerationRouter(
            client, settings.index, default=default, view_loader=lambda: load_view(client, settings), ttl_s=0
        )
        retriever = Retriever(default, embedder, settings.serving, settings.index.generation, router=router)
        out = []
        for tenant, q in QUERIES:
            spec = QuerySpec(
                query_id=f"q-{tenant}-{len(out)}",
                question=q,
                caller=Caller(subject="alice", groups=("everyone",)),
                top_k=3,
                deadline_at=utcnow() + timedelta(minutes=5),
            )
            res = retriever.retrieve(QueryRequested(tenant_id=tenant, query=spec))
            out.append(
                (
                    res.generation,
                    [p.chunk_id for p in res.passages],
                    [round(p.score, 5) for p in res.passages],
                )
            )
        return out
    finally:
        client.close()


def test_backup_wipe_restore_identical(weaviate: IsolatedWeaviate, unique: str) -> None:
    s = weaviate.settings.model_copy(
        update={
            "index": weaviate.settings.index.model_copy(update={"generation": "g0001"}),
            "generations": weaviate.settings.generations.model_copy(
                update={"registry_collection": f"G{unique}"}
            ),
            "serving": weaviate.settings.serving.model_copy(update={"min_relevance": 0.0}),
        }
    )
    emb = HashEmbedder()
    client = connect(s.weaviate)
    try:
        reg = Registry(client, s)
        reg.ensure()
        live = WeaviateStore(client, *names.collections(s.index, "g0001"))
        _fill(live, "g0001", emb, words_per_chunk=6)
        adopt_live(reg, s, emb)
        from ragstream.core.chunk import ChunkingPolicy

        rec = make_record(
            s,
            source=SourceSnapshot(topic="t", offsets={0: 3}),
            policy=ChunkingPolicy(max_tokens=32),
            embedder=emb,
            parent="g0001",
            name="g0002",
        )
        reg.put_record(rec)
        _fill(
            WeaviateStore(client, rec.chunks_collection, rec.documents_collection),
            "g0002",
            emb,
            words_per_chunk=3,
        )
        reg.append(GenerationEvent.new("g0002", "ready"))
        reg.append(GenerationEvent.new("g0002", "promoted", tenant="globex"))
        view_before = reg.view()
    finally:
        client.close()
    before = _answers(s, emb)
    assert [g for g, _, _ in before] == ["g0001", "g0001", "g0002", "g0002"]
    assert all(chunks for _, chunks, _ in before)

    env = weaviate.env(s)
    created = _cli(env, "create", "--id", f"test-{unique}")
    assert created["status"] == "SUCCESS" and created["live"] == "g0001"
    assert set(created["collections"]) == {
        f"G{unique}",
        "RagChunks_g0001",
        "RagDocuments_g0001",
        "RagChunks_g0002",
        "RagDocuments_g0002",
    }
    listed = _cli(env, "list", "--json")
    assert any(b["backup_id"] == f"test-{unique}" and b["status"] == "SUCCESS" for b in listed["backups"])

    weaviate.stop()
    shutil.rmtree(weaviate.data_dir)
    weaviate.start()
    client = connect(s.weaviate)
    try:
        assert not client.collections.exists("RagChunks_g0001"), "the data directory was wiped"
    finally:
        client.close()

    restored = _cli(env, "restore", f"test-{unique}")
    assert restored["status"] == "SUCCESS"
    assert restored["alias"] == {"RagChunks": "RagChunks_g0001"}
    client = connect(s.weaviate)
    try:
        view_after = Registry(client, s).view()
    finally:
        client.close()
    assert view_after.live == view_before.live == "g0001"
    assert view_after.tenant_history == view_before.tenant_history
    assert {n: st.record for n, st in view_after.generations.items()} == {
        n: st.record for n, st in view_before.generations.items()
    }
    assert _answers(s, emb) == before
