"""Online model verifier consumer.

In:  ragstream.query.answers.v1 (AnswerDelta, QueryAnswered, QueryFailed: only a non-abstained QueryAnswered
     in the sampled share is judged; every other record yields nothing)
Out: ragstream.answers.verified.v1 (AnswerVerified)
Group: ragstream.verifier. Ack: commit after the output is acknowledged (a record it skips has none).
Idempotency: keyed by query id; the event id is uuid5(tenant / query id / the answer's event id), so a
replay publishes the same event again (the verdicts may differ, its id does not).

Its own consumer group on the answers topic, so an answer never waits for it. Which answers: a stable
hash of the query id below `verifier.sample_rate` (ragstream.core.verify.sampled). For each one it reads
the prompt's passages from the store (`context_chunk_ids`, in the generation that served them), maps the
answer's citations to them, and applies the online policy (ragstream.core.verify.online_verdict): a name
or number its sentence's cited passages lack is unsupported without a model call; else the model's claim
verdicts, bounded by `verifier.budget_s`. A model that is down or slow gives unjudged claims (outcome
`unjudged`), never a retry or a dead letter; a store error is retried or dead-lettered like retrieval's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from ragstream.adapters.errors import ADAPTER_ERRORS, translate
from ragstream.core.verify import (
    Claim,
    OnlineVerdict,
    claims_novel_terms,
    claims_of,
    online_verdict,
    sampled,
)
from ragstream.generations.routing import GenerationRouter
from ragstream.ports import ChunkStore, Verifier
from ragstream.runtime.deps import Deps, Need, required
from ragstream.runtime.worker import Handler, Inbound, Outbound
from ragstream.settings import VerifierSettings
from ragstream.telemetry import within
from schemas.serving import QueryAnswered
from schemas.topics import CONSUMERS
from schemas.verification import AnswerVerified

SPEC = CONSUMERS["verifier"]
NEEDS: tuple[Need, ...] = ("store", "router", "verifier")
log = logging.getLogger(__name__)
# Event ids of verifications: uuid5 in this namespace of tenant / query id / answer event id.
VERIFIED_NAMESPACE = uuid.UUID("5d0c7a0e-9b7e-4c4e-8f1e-7a1f3b0c2d49")

VERIFIED = Counter(
    "ragstream_answers_verified",
    "Sampled answers the online model verifier scored, by outcome (supported, unsupported, unjudged)",
    ["outcome"],
)
SKIPPED = Counter(
    "ragstream_verifier_skipped",
    "Answers-topic records the online verifier did not score (not_final, abstained, not_sampled, disabled)",
    ["reason"],
)
SUPPORT = Histogram(
    "ragstream_verified_support",
    "Share of a verified answer's claims the model judged supported",
    buckets=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
VERIFY_SECONDS = Histogram(
    "ragstream_verify_seconds",
    "Time to verify one sampled answer (store read, novel-term check, model calls)",
    buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
OUTCOMES = ("supported", "unsupported", "unjudged")


def canonical(chunk_id: str) -> str | None:
    try:
        return str(uuid.UUID(chunk_id))
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass
class VerifyStage:
    store: ChunkStore
    verifier: Verifier
    cfg: VerifierSettings
    verifier_name: str = ""
    router: GenerationRouter | None = None
    # After the first answer of a batch, no new one goes to the model once the batch has run this long
    # (the rest of its sampled answers are published unjudged): one answer can take twice the budget (two
    # requests of claims), and a batch must end before the worker counts as stuck (`worker.stuck_after_s`,
    # then /livez fails and the pod is restarted).
    batch_limit_s: float = 60.0

    def wanted(self, ev: object) -> QueryAnswered | None:
        """The answer to score, or None (counted by why not)."""
        reason = None
        if not isinstance(ev, QueryAnswered):
            reason = "not_final"
        elif ev.abstained:
            reason = "abstained"
        elif not self.cfg.enabled:
            reason = "disabled"
        elif not sampled(ev.query_id, self.cfg.sample_rate):
            reason = "not_sampled"
        if reason is not None:
            SKIPPED.labels(reason).inc()
            return None
        assert isinstance(ev, QueryAnswered)
        return ev

    def passages(self, ev: QueryAnswered) -> tuple[dict[str, str], list[str]]:
        """(citation id -> cited passage text, every prompt passage's text in prompt order)."""
        store = self.router.store(ev.generation) if self.router is not None and ev.generation else self.store
        ids = [c for c in (canonical(i) for i in ev.context_chunk_ids) if c]
        cited_ids = {c.citation_id: canonical(c.chunk_id) for c in ev.citations}
        wanted = list(dict.fromkeys([*ids, *(c for c in cited_ids.values() if c)]))
        try:
            rows = store.get_chunks(ev.tenant_id, wanted) if wanted else {}
        except ADAPTER_ERRORS as exc:  # permanent (4xx) -> dead letter now; transient -> retried
            raise translate(exc, "weaviate") from exc
        texts = {cid: str(row.get("text", "")) for cid, row in rows.items()}
        cited = {cid: texts[chunk] for cid, chunk in cited_ids.items() if chunk in texts}
        return cited, [texts[c] for c in ids if c in texts]

    def verify(self, ev: QueryAnswered, out_of_time: bool = False) -> AnswerVerified:
        t0 = time.perf_counter()
        cited, context = self.passages(ev)
        question = ev.question.strip()
        claims: list[Claim] = claims_of(ev.answer, cited, context, question or None)
        if not cited and not context:
            # The passages are gone (document deleted or re-indexed since): nothing to judge against.
            verdict = online_verdict(claims, [])
        elif novel := claims_novel_terms(claims, question):
            verdict = online_verdict(claims, [], novel)
        elif out_of_time:
            verdict = online_verdict(claims, [])
        else:
            verdict = online_verdict(claims, self._judge(ev, claims[: self.cfg.max_claims]))
        seconds = time.perf_counter() - t0
        self._observe(verdict, seconds)
        return AnswerVerified(
            **ev.caused(producer="verifier"),
            event_id=str(uuid.uuid5(VERIFIED_NAMESPACE, f"{ev.tenant_id}/{ev.query_id}/{ev.event_id}")),
            query_id=ev.query_id,
            subject=ev.subject,
            generation=ev.generation,
            model=ev.model,
            verifier=self.verifier_name,
            sampled_rate=self.cfg.sample_rate,
            outcome=verdict.outcome,  # type: ignore[arg-type]
            support=verdict.support,
            supported=verdict.outcome == "supported",
            claims=verdict.claims,
            unsupported_claims=tuple(c[:500] for c in verdict.unsupported_claims),
            novel_terms=tuple(t[:100] for t in verdict.novel_terms[:50]),
            unjudged=verdict.unjudged,
            seconds=round(seconds, 4),
        )

    def _judge(self, ev: QueryAnswered, claims: list[Claim]) -> list[bool | None]:
        """The model's verdicts; an unreachable model leaves every claim unjudged (never a retry: the
        answer was delivered long ago, and a dead letter per answer would only hide the outage)."""
        try:
            return list(self.verifier.verify_claims(claims).verdicts)
        except ADAPTER_ERRORS as exc:
            log.warning("verifier model failed on query %s: %s: %s", ev.query_id, type(exc).__name__, exc)
            return [None] * len(claims)

    def _observe(self, verdict: OnlineVerdict, seconds: float) -> None:
        assert verdict.outcome in OUTCOMES
        VERIFIED.labels(verdict.outcome).inc()
        SUPPORT.observe(verdict.support)
        VERIFY_SECONDS.observe(seconds)
        span = trace.get_current_span()
        span.set_attribute("verify.outcome", verdict.outcome)
        span.set_attribute("verify.support", verdict.support)
        span.set_attribute("verify.claims", verdict.claims)
        span.set_attribute("verify.unjudged", verdict.unjudged)
        span.set_attribute("verify.novel_terms", len(verdict.novel_terms))
        span.set_attribute("verify.seconds", round(seconds, 4))


def component(deps: Deps) -> VerifyStage:
    s = deps.settings
    return VerifyStage(
        required(deps.store, "store"),
        required(deps.verifier, "verifier"),
        s.verifier,
        verifier_name=s.verifier.llm(s.llm).model,
        router=deps.router,
        batch_limit_s=max(0.0, s.worker.stuck_after_s - 2 * s.verifier.budget_s),
    )


def build_handler(deps: Deps) -> Handler:
    return handler_for(component(deps))


def handler_for(stage: VerifyStage) -> Handler:
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        outs: list[Outbound] = []
        t0 = time.monotonic()
        for item in items:
            ev = stage.wanted(item.event)
            if ev is None:
                continue
            with within(item.context):
                late = bool(outs) and time.monotonic() - t0 > stage.batch_limit_s
                out = await asyncio.to_thread(stage.verify, ev, late)
                outs.append(Outbound(out_topic, ev.query_id.encode(), out))
        return outs

    return handle
