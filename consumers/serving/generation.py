"""Generation consumer.

In:  ragstream.query.reranked.v1 (QueryReranked)
Out: ragstream.query.answers.v1 (AnswerDelta stream, then QueryAnswered; QueryFailed when the model fails);
     ragstream.review.flagged.v1 (AnswerFlagged, best effort: an answer the groundedness scorers flag for
     human review, when `console.review_enabled` and the topic was created at wiring)
Group: ragstream.generation. Ack: commit after the final answer is acknowledged. Idempotency: keyed by query
id; a replay may stream a second time, the gateway keeps the first final answer.

Before any text enters the prompt, every passage is authorized a second time: against the caller (the ACL
the search saw) and against the latest ACL state of its document (an ACL change since retrieval wins).
Citations name only chunks that were in the prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from ragstream.adapters.errors import failure_code
from ragstream.core.acl import may_read, passage_allowed
from ragstream.core.cite import MARKER, cited_ids, is_abstention, shape_citations
from ragstream.core.groundedness import GroundednessScorer, split_sentences
from ragstream.core.prompt import ABSTAIN, Prompt, PromptDecision, TokenCounter, approx_tokens, assemble
from ragstream.core.review import flag_reasons
from ragstream.generations.routing import GenerationRouter
from ragstream.ports import ChatModel, ChunkStore, DocumentState, Usage
from ragstream.runtime import metrics
from ragstream.runtime.deps import Deps, Need, Send, required
from ragstream.runtime.worker import Handler, Inbound, Outbound
from ragstream.settings import ConsoleSettings, KafkaSettings, ServingSettings
from ragstream.telemetry import within
from schemas.envelope import utcnow
from schemas.review import REVIEW_FLAGGED, AnswerFlagged, FlaggedPassage
from schemas.serving import AnswerDelta, Passage, QueryAnswered, QueryFailed, QueryReranked
from schemas.topics import ANSWERS, CONSUMERS

SPEC = CONSUMERS["generation"]
NEEDS: tuple[Need, ...] = ("store", "llm", "send", "router", "count_tokens")
log = logging.getLogger(__name__)
tracer = trace.get_tracer("ragstream.generation")
PROMPT_TOKENS = Histogram(
    "ragstream_prompt_tokens",
    "Prompt tokens per answer",
    ["request_class"],
    buckets=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
)
COMPLETION_TOKENS = Histogram(
    "ragstream_completion_tokens",
    "Completion tokens per answer",
    ["request_class"],
    buckets=(1, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ABSTAINED = Counter("ragstream_abstentions", "Answers that abstained", ["request_class", "why"])
DENIED = Counter("ragstream_context_denied", "Passages refused by the second authorization check", ["reason"])
GROUNDEDNESS = Histogram(
    "ragstream_answer_groundedness",
    "Share of answer statements supported by the cited passages",
    ["request_class"],
    buckets=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
CITATIONS = Histogram(
    "ragstream_answer_citations",
    "Citations per non-abstaining answer",
    ["request_class"],
    buckets=(0, 1, 2, 3, 4, 6, 8, 12),
)
FLAGGED = Counter(
    "ragstream_answers_flagged",
    "Answers published for human review, by first reason (low_support, unsupported_citation)",
    ["reason"],
)
CITATION_SUPPORT = Histogram(
    "ragstream_citation_support",
    "Share of an answer's citations whose passage supports the statement that cites it",
    ["request_class"],
    buckets=(0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
)


@dataclass
class Generator:
    store: ChunkStore | None
    llm: ChatModel
    cfg: ServingSettings
    count_tokens: TokenCounter = approx_tokens
    # Tests capture the exact messages the model received (to prove nothing unauthorized got there).
    on_prompt: Callable[[str, list[dict[str, str]]], None] | None = None
    # The second check reads document state in the generation each passage came from.
    router: GenerationRouter | None = None
    scorer: GroundednessScorer = field(default_factory=GroundednessScorer)
    # Flagged answers go to the review topic when set (compose.wire sets it once the topic exists).
    review: ConsoleSettings | None = None

    def _live_states(self, tenant: str, passages: list[Passage]) -> dict[tuple[str, str], DocumentState]:
        assert self.store is not None
        by_gen: dict[str, list[str]] = {}
        for p in passages:
            by_gen.setdefault(p.generation, []).append(p.document_id)
        out: dict[tuple[str, str], DocumentState] = {}
        for gen, docs in by_gen.items():
            store = self.router.store(gen) if self.router is not None and gen else self.store
            out.update({(gen, d): st for d, st in store.get_states(tenant, docs).items()})
        return out

    def authorize(self, ev: QueryReranked) -> tuple[list[Passage], list[PromptDecision]]:
        caller = ev.query.caller
        denied: list[PromptDecision] = []
        allowed = []
        for p in ev.passages:
            if passage_allowed(p, caller):
                allowed.append(p)
            else:
                denied.append(PromptDecision(p.chunk_id, False, "unauthorized"))
        if self.store is not None and allowed:
            states = self._live_states(ev.tenant_id, allowed)
            checked = []
            for p in allowed:
                st = states.get((p.generation, p.document_id))
                if st is None or st.live_version != p.source_version:
                    denied.append(PromptDecision(p.chunk_id, False, "not_live"))
                elif not may_read(st.acl_principals, st.acl_groups, caller):
                    denied.append(PromptDecision(p.chunk_id, False, "unauthorized"))
                else:
                    checked.append(p)
            allowed = checked
        for d in denied:
            DENIED.labels(d.reason).inc()
        return allowed, denied

    async def answer(self, ev: QueryReranked, send: Send) -> QueryAnswered:
        q = ev.query
        t0 = time.perf_counter()
        key = q.query_id.encode()
        with tracer.start_as_current_span("prompt.assemble") as span:
            passages, denied = self.authorize(ev)
            prompt = assemble(q.question, passages, self.cfg.context_token_budget, self.count_tokens)
            span.set_attribute("prompt.context_tokens", prompt.context_tokens)
            span.set_attribute("prompt.passages", len(prompt.passages))
            span.set_attribute("prompt.denied", len(denied))
            span.set_attribute(
                "prompt.citation_ids", [d.citation_id for d in prompt.decisions if d.citation_id]
            )
        timings = {**ev.timings_ms, "prompt": (time.perf_counter() - t0) * 1000}
        base = {
            **ev.caused(producer="generation"),
            "query_id": q.query_id,
            "subject": q.caller.subject,
            "generation": ev.generation,
            "question": q.question,
        }
        if not prompt.passages:
            ABSTAINED.labels(q.request_class, "no_context").inc()
            await send(
                [
                    Outbound(
                        ANSWERS.name,
                        key,
                        AnswerDelta(
                            **ev.caused(producer="generation"), query_id=q.query_id, seq=0, text=ABSTAIN
                        ),
                    )
                ]
            )
            return QueryAnswered(
                **base, answer=ABSTAIN, abstained=True, model=self.llm.model, timings_ms=timings
            )
        if self.on_prompt is not None:
            self.on_prompt(q.query_id, prompt.messages)
        usage = Usage()
        parts: list[str] = []
        pending: list[str] = []
        seq = 0
        first_token_ms: float | None = None
        with tracer.start_as_current_span("generation") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", self.llm.model)
            span.set_attribute("gen_ai.request.max_tokens", self.cfg.answer_max_tokens)
            async for piece in self.llm.stream(prompt.messages, self.cfg.answer_max_tokens, usage):
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - t0) * 1000
                parts.append(piece)
                pending.append(piece)
                if len(pending) >= self.cfg.stream_batch_tokens:
                    await send(
                        [
                            Outbound(
                                ANSWERS.name,
                                key,
                                AnswerDelta(
                                    **ev.caused(producer="generation"),
                                    query_id=q.query_id,
                                    seq=seq,
                                    text="".join(pending),
                                ),
                            )
                        ]
                    )
                    seq += 1
                    pending = []
            if pending:
                await send(
                    [
                        Outbound(
                            ANSWERS.name,
                            key,
                            AnswerDelta(
                                **ev.caused(producer="generation"),
                                query_id=q.query_id,
                                seq=seq,
                                text="".join(pending),
                            ),
                        )
                    ]
                )
            usage.prompt_tokens = usage.prompt_tokens or sum(
                self.count_tokens(m["content"]) for m in prompt.messages
            )
            usage.completion_tokens = usage.completion_tokens or self.count_tokens("".join(parts))
            span.set_attribute("gen_ai.response.model", self.llm.model)
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        raw = "".join(parts).strip()
        abstained = is_abstention(raw)
        text, citations = (ABSTAIN, []) if abstained else shape_citations(raw, prompt)
        grounded: float | None = None
        if abstained:
            ABSTAINED.labels(q.request_class, "model").inc()
        else:
            grounded, support = self.judge(q.question, text, prompt, q.request_class)
            await self.flag(ev, text, grounded, support, prompt, send)
        PROMPT_TOKENS.labels(q.request_class).observe(usage.prompt_tokens)
        COMPLETION_TOKENS.labels(q.request_class).observe(usage.completion_tokens)
        timings["generation"] = (time.perf_counter() - t0) * 1000 - timings["prompt"]
        if first_token_ms is not None:
            timings["first_token"] = first_token_ms
        return QueryAnswered(
            **base,
            answer=text,
            abstained=abstained,
            citations=tuple(citations),
            model=self.llm.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            timings_ms=timings,
            context_chunk_ids=tuple(p.chunk_id for p in prompt.passages),
            groundedness=grounded,
        )

    def judge(
        self, question: str, answer: str, prompt: Prompt, request_class: str
    ) -> tuple[float, dict[str, bool]]:
        """Online quality signals: groundedness against the cited passages (all prompt passages when the
        answer cites none) and the share of citations whose passage supports the sentence citing it.
        Returns the support share and, per cited id, whether its passage supports every sentence citing it."""
        cmap = prompt.citation_map()
        cited = [cmap[c] for c in dict.fromkeys(cited_ids(answer)) if c in cmap]
        result = self.scorer.score(answer, [p.text for p in cited or prompt.passages], question)
        GROUNDEDNESS.labels(request_class).observe(result.supported_share)
        CITATIONS.labels(request_class).observe(len(cited))
        checks: list[bool] = []
        support: dict[str, bool] = {}
        for sentence in split_sentences(answer):
            for c in cited_ids(sentence):
                if c in cmap:
                    ok = self.scorer.score(MARKER.sub("", sentence), [cmap[c].text], question).grounded
                    checks.append(ok)
                    support[c] = support.get(c, True) and ok
        if checks:
            CITATION_SUPPORT.labels(request_class).observe(sum(checks) / len(checks))
        return round(result.supported_share, 4), support

    async def flag(
        self,
        ev: QueryReranked,
        answer: str,
        grounded: float,
        support: dict[str, bool],
        prompt: Prompt,
        send: Send,
    ) -> None:
        """Publish the answer to the review topic when the scorers flag it. Best effort: a review that
        cannot be sent is logged; the answer itself never waits on or fails for it."""
        if self.review is None or not self.review.review_enabled:
            return
        reasons = flag_reasons(grounded, support, self.review.review_min_support)
        if not reasons:
            return
        q = ev.query
        cmap = prompt.citation_map()
        shown = [c for c in dict.fromkeys(cited_ids(answer)) if c in cmap] or list(cmap)
        flagged = AnswerFlagged(
            **ev.caused(producer="generation"),
            query_id=q.query_id,
            subject=q.caller.subject,
            groups=q.caller.groups,
            question=q.question,
            answer=answer,
            reasons=reasons,
            groundedness=grounded,
            unsupported_citations=tuple(c for c, ok in support.items() if not ok),
            passages=tuple(
                FlaggedPassage(
                    citation_id=c,
                    document_id=cmap[c].document_id,
                    chunk_id=cmap[c].chunk_id,
                    source_version=cmap[c].source_version,
                    title=cmap[c].title,
                    text=cmap[c].text[:4000],
                    acl_principals=cmap[c].acl_principals,
                    acl_groups=cmap[c].acl_groups,
                    supports=support.get(c),
                )
                for c in shown
            ),
            generation=ev.generation,
            model=self.llm.model,
        )
        try:
            await send([Outbound(REVIEW_FLAGGED.name, q.query_id.encode(), flagged)])
            FLAGGED.labels(reasons[0]).inc()
        except Exception as exc:
            log.warning("review flag of query %s not sent: %s: %s", q.query_id, type(exc).__name__, exc)


# Kafka namespaces (bootstrap servers, topic prefix) whose review topics this process created
# (compose.wire, before it builds the handler). Without the topic a flag would block on its metadata; an
# in-memory bus (component tests) is never marked, so its generation publishes no flags.
_REVIEW_READY: set[tuple[str, str]] = set()


def mark_review_topics_ready(kafka: KafkaSettings) -> None:
    _REVIEW_READY.add((kafka.bootstrap_servers, kafka.topic_prefix))


def review_topics_ready(kafka: KafkaSettings) -> bool:
    return (kafka.bootstrap_servers, kafka.topic_prefix) in _REVIEW_READY


def component(deps: Deps) -> Generator:
    return Generator(
        required(deps.store, "store") if deps.second_check else None,
        required(deps.llm, "llm"),
        deps.settings.serving,
        count_tokens=deps.count_tokens or approx_tokens,
        on_prompt=deps.on_prompt,
        router=deps.router,
        review=deps.settings.console if review_topics_ready(deps.settings.kafka) else None,
    )


def build_handler(deps: Deps) -> Handler:
    return handler_for(component(deps), required(deps.send, "send"))


def handler_for(gen: Generator, send: Send) -> Handler:
    async def handle(items: list[Inbound]) -> list[Outbound]:
        outs: list[Outbound] = []
        for item in items:
            ev: QueryReranked = item.event
            key = ev.query.query_id.encode()
            with within(item.context):
                try:
                    final = await gen.answer(ev, send)
                except Exception as exc:
                    # The text is for logs and spans (and the event's internal `reason`); the gateway
                    # shows clients a code and the correlation id only.
                    log.warning(
                        "generation failed: query %s (correlation %s): %s: %s",
                        ev.query.query_id,
                        ev.correlation_id,
                        type(exc).__name__,
                        exc,
                    )
                    trace.get_current_span().record_exception(exc)
                    final = QueryFailed(
                        **ev.caused(producer="generation"),
                        query_id=ev.query.query_id,
                        subject=ev.query.caller.subject,
                        stage="generation",
                        reason=f"{type(exc).__name__}: {exc}"[:500],
                        code=failure_code(exc),
                    )
                _observe_latency(ev, final)
                outs.append(Outbound(ANSWERS.name, key, final))
        return outs

    return handle


def _observe_latency(ev: QueryReranked, final: QueryAnswered | QueryFailed) -> None:
    q = ev.query
    if q.requested_at is None:
        return
    outcome = "failed" if isinstance(final, QueryFailed) else ("abstained" if final.abstained else "answered")
    metrics.QUERY_LATENCY.labels(q.request_class, outcome).observe(
        max(0.0, (utcnow() - q.requested_at).total_seconds())
    )
