"""Rerankers behind one Protocol: none, the lexical second stage of the retrieval core, a
sentence-transformers CrossEncoder, or a remote /rerank API."""

from __future__ import annotations

import httpx

from ragstream.core.fuse import Candidate, lexical_rerank
from ragstream.ports.models import Reranker


class NoReranker:
    name = "none"

    def score(self, query: str, texts: list[str]) -> list[float]:
        return [float(-i) for i in range(len(texts))]  # keeps retrieval order


class LexicalReranker:
    """Stemmed whole-document BM25 over the candidate pool fused with the first stage's scores and cosines
    (`ragstream.core.fuse.lexical_rerank`): no model, a few milliseconds for a hundred candidates."""

    name = "lexical"

    def score(self, query: str, texts: list[str]) -> list[float]:
        return lexical_rerank(query, [Candidate(str(i), t, 0.0) for i, t in enumerate(texts)])

    def score_candidates(self, query: str, candidates: list[Candidate]) -> list[float]:
        """With the first-stage signals (the rerank consumer calls this when a reranker has it)."""
        return lexical_rerank(query, candidates)


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder by local path (or a model id already in the Hugging Face cache).

    Never downloads: no model hub is reachable from a worker. `local_files_only` says so for this model
    alone, instead of setting HF_HUB_OFFLINE for the whole process as a side effect of a constructor.
    """

    def __init__(self, model: str, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        self.name = f"cross-encoder:{model}"
        self._model = CrossEncoder(model, device=device, local_files_only=True)

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(s) for s in self._model.predict([(query, t) for t in texts], show_progress_bar=False)]


class HttpReranker:
    """The `/rerank` API of TEI, vLLM and Infinity: {query, texts} -> [{index, score}]."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.name = f"http:{url}"
        self._url = url
        self._client = httpx.Client(timeout=timeout_s)

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        resp = self._client.post(self._url, json={"query": query, "texts": texts, "raw_scores": False})
        resp.raise_for_status()
        body = resp.json()
        items = body.get("results", body) if isinstance(body, dict) else body
        scores = [0.0] * len(texts)
        for item in items:
            scores[int(item["index"])] = float(item.get("score", item.get("relevance_score", 0.0)))
        return scores


def from_spec(spec: str) -> Reranker:
    """`none`, `lexical`, `cross-encoder:<path or id>`, `http:<url>`."""
    if spec in ("", "none"):
        return NoReranker()
    if spec == "lexical":
        return LexicalReranker()
    kind, _, target = spec.partition(":")
    if kind == "cross-encoder":
        return CrossEncoderReranker(target)
    if kind == "http":
        return HttpReranker(target)
    raise ValueError(f"unknown reranker {spec!r}: use none, lexical, cross-encoder:<model>, http:<url>")
