"""`ragstream lineage DOC --tenant T`: source version -> normalizer -> chunks, policy, model, generation."""

from __future__ import annotations

import typer
from rich.tree import Tree

from application.cli.common import console, emit_json, err, settings
from ragstream import names


def lineage(
    document_id: str = typer.Argument(..., metavar="DOC"),
    tenant: str = typer.Option(..., "--tenant"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """What the pipeline recorded for one document, with times."""
    from ragstream.adapters.store import open_store

    s = settings()
    client, store = open_store(s)
    try:
        if not store.has_tenant(tenant):
            err.print(f"tenant {tenant!r} has no index in generation {s.index.generation}")
            raise typer.Exit(1)
        state = store.get_state(tenant, document_id)
        if state is None:
            err.print(f"document {document_id!r} is not indexed for tenant {tenant!r}")
            raise typer.Exit(1)
        chunks = store.document_chunks(tenant, document_id)
    finally:
        client.close()
    record = {
        "tenant": tenant,
        "document_id": document_id,
        "source_id": state.source_id,
        "source_version": state.live_version,
        "content_sha256": state.content_sha256,
        "source_occurred_at": state.source_occurred_at,
        "normalizer_version": state.normalizer_version,
        "policy_hash": state.policy_hash,
        "embedding_model": state.embedding_model,
        "generation": state.generation,
        "collection": names.chunks_collection(s.index),
        "indexed_at": state.indexed_at,
        "acl": {"principals": list(state.acl_principals), "groups": list(state.acl_groups)},
        "chunks": [
            {
                "chunk_id": c["chunk_id"],
                "position": c["position"],
                "heading": c.get("heading", ""),
                "chars": len(c.get("text", "")),
            }
            for c in chunks
        ],
    }
    if json_out:
        emit_json(record)
        return
    tree = Tree(f"[bold]{document_id}[/] ({tenant})")
    src = tree.add(
        f"source {state.source_id} version [cyan]{state.live_version}[/] (event {state.source_occurred_at})"
    )
    norm = src.add(f"normalizer [cyan]{state.normalizer_version}[/]")
    pol = norm.add(f"chunking policy [cyan]{state.policy_hash}[/]: {len(chunks)} chunks")
    for c in record["chunks"][:20]:
        pol.add(f"#{c['position']} {c['chunk_id']} {c['heading'][:50]} ({c['chars']} chars)")
    pol.add(f"embedding model [cyan]{state.embedding_model}[/]").add(
        f"generation [cyan]{state.generation}[/] in {record['collection']}, indexed {state.indexed_at}"
    )
    console.print(tree)
