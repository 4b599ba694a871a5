"""Groundedness scorer: paraphrases pass, same-words-wrong-fact and unrelated answers fail; HaluEval check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evals.halueval import run_halueval
from ragstream.core.groundedness import GroundednessScorer, split_statements, tokenize

pytestmark = pytest.mark.unit

HALUEVAL = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "halueval-qa" / "dev.jsonl"

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
    "The tower is 330 metres tall."
)
CURIE = (
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research "
    "on radioactivity. She was the first woman to win a Nobel Prize. She shared the 1903 Nobel Prize in "
    "Physics with Pierre Curie and Henri Becquerel."
)
SWATCH = (
    "Longines is a luxury watch company based in Saint-Imier, Switzerland. Founded by Auguste Agassiz in "
    "1832, it is currently owned by the Swatch Group. The Swatch Group is a Swiss manufacturer of watches "
    "and jewelry. The company was founded in 1983 by Nicolas Hayek."
)
KAFKA = (
    "Apache Kafka is a distributed event store and stream-processing platform. It is an open-source system "
    "developed by the Apache Software Foundation, written in Java and Scala. Kafka does not support "
    "exactly-once delivery across external systems without transactions."
)
DANUBE = (
    "The Danube is the second-longest river in Europe, after the Volga. It flows through much of Central "
    "and Southeastern Europe, from the Black Forest into the Black Sea. It runs through ten countries."
)

SCORER = GroundednessScorer()


def grounded(answer: str, passage: str, question: str | None = None) -> bool:
    return SCORER.score(answer, [passage], question).grounded


@pytest.mark.parametrize(
    ("answer", "passage", "question"),
    [
        ("The tower in Paris was designed and constructed by Gustave Eiffel's company between 1887 and 1889.",
         EIFFEL, None),
        ("It is 330 metres tall.", EIFFEL, "How tall is the Eiffel Tower?"),
        ("Marie Curie was the first woman to receive a Nobel Prize; she shared the 1903 physics prize with "
         "Pierre Curie and Henri Becquerel.", CURIE, None),
        ("The Swatch Group, which owns Longines, was founded in 1983.", SWATCH,
         "The group that owns Longines was founded in which year?"),
        ("Auguste Agassiz started Longines in 1832.", SWATCH, None),
        ("Kafka is an open-source stream-processing platform developed by the Apache Software Foundation and "
         "written in Java and Scala.", KAFKA, None),
        ("The Danube flows from the Black Forest to the Black Sea through 10 countries.", DANUBE, None),
        ("The Volga.", DANUBE, "Which river in Europe is longer than the Danube?"),
        ("Swatch Group [2]", SWATCH, "Who owns Longines?"),
    ],
)  # fmt: skip
def test_faithful_answers_and_paraphrases_are_grounded(
    answer: str, passage: str, question: str | None
) -> None:
    result = SCORER.score(answer, [passage], question)
    assert result.grounded, [(s.text, s.score, s.reason) for s in result.statements]
    assert all(s.passage_index == 0 for s in result.statements)


@pytest.mark.parametrize(
    ("answer", "passage"),
    [
        ("The Eiffel Tower is 300 metres tall.", EIFFEL),  # changed number
        ("Marie Curie shared the 1911 Nobel Prize in Physics with Pierre Curie.", CURIE),  # changed year
        ("The tower was designed by Gustave Flaubert.", EIFFEL),  # changed name
        ("The Eiffel Tower is in Lyon, France.", EIFFEL),  # changed place
        ("Marie Curie was not the first woman to win a Nobel Prize.", CURIE),  # negation added
        (
            "Kafka supports exactly-once delivery across external systems without transactions.",
            KAFKA,
        ),  # dropped
        ("The Swatch Group was founded in 1983 by Auguste Agassiz.", SWATCH),  # swapped entity
        ("Nicolas Hayek founded Longines in 1832.", SWATCH),  # swapped entity
        ("The Danube is the longest river in Europe.", DANUBE),  # dropped rank
        ("The Danube runs through twelve countries.", DANUBE),  # spelled-out wrong number
    ],
)
def test_same_words_wrong_fact_is_rejected(answer: str, passage: str) -> None:
    result = SCORER.score(answer, [passage])
    assert not result.grounded, [(s.text, s.score, s.reason) for s in result.statements]
    assert result.score < SCORER.threshold


@pytest.mark.parametrize(
    ("answer", "passage", "question"),
    [
        ("Photosynthesis converts light energy into chemical energy in plants.", EIFFEL, None),
        ("Kafka is a popular brand of sneakers sold in Brazil.", KAFKA, "What is Kafka?"),
        (
            "The Swatch Group was founded.",
            SWATCH,
            "When was the Swatch Group founded?",
        ),  # restates the question
        ("Yes.", SWATCH, "Who founded the Swatch Group?"),  # a yes/no does not answer a wh-question
    ],
)
def test_unrelated_or_empty_answers_are_rejected(answer: str, passage: str, question: str | None) -> None:
    assert not grounded(answer, passage, question)


def test_result_shape_and_partial_support() -> None:
    answer = "The Eiffel Tower is 330 metres tall. It was built in 1925."
    result = SCORER.score(answer, ["unrelated text about cooking", EIFFEL])
    assert [s.supported for s in result.statements] == [True, False]
    assert result.statements[0].passage_index == 1
    assert "1925" in result.statements[1].unsupported
    assert result.supported_share == 0.5
    assert not result.grounded
    assert 0.0 <= result.score <= 1.0
    assert result.threshold == SCORER.threshold


def test_no_passages_or_empty_answer() -> None:
    assert not SCORER.score("Paris.", []).grounded
    assert not SCORER.score("", [EIFFEL]).grounded
    assert SCORER.score("", [EIFFEL]).statements == ()


def test_statement_splitting_keeps_initials_and_splits_asides() -> None:
    assert split_statements("E. Howard Hunt was a writer. He died in 2007.") == [
        "E. Howard Hunt was a writer.",
        "He died in 2007.",
    ]
    assert split_statements("Hugh Grant, who co-starred with Renée Zellweger, was born in 1960 [1].") == [
        "Hugh Grant was born in 1960.",
        "Hugh Grant co-starred with Renée Zellweger",
    ]


def test_tokens_fold_accents_and_normalize_numbers() -> None:
    toks = tokenize("Renée won 2,000 prizes in the 1990s; the twelfth")
    norms = [t.norm for t in toks]
    assert norms[:4] == ["renee", "won", "2000", "prizes"]
    assert "1990" in norms
    assert tokenize("O'Brien's")[0].norm == "obrien"


class WordTableEmbedder:
    """A fake embedder: words listed together share a vector; anything else gets its own."""

    def __init__(self, groups: list[set[str]]) -> None:
        self.groups = groups
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            gid = next((g for g, words in enumerate(self.groups) if text in words), None)
            out[i, gid if gid is not None else 8 + hash(text) % 56] = 1.0
        return out


def test_injected_embedder_vouches_for_paraphrased_words_only() -> None:
    answer = "Eiffel's company crafted the tower."
    assert not grounded(answer, EIFFEL)  # 'crafted' is in no passage and no synonym table
    emb = WordTableEmbedder([{"crafted", "built"}])
    scorer = GroundednessScorer(embedder=emb)
    assert scorer.score(answer, [EIFFEL]).grounded
    assert emb.calls > 0
    # the embedder never excuses a wrong number
    assert not scorer.score("Eiffel's company crafted the tower in 1899.", [EIFFEL]).grounded


def test_halueval_first_rows_when_present() -> None:
    if not HALUEVAL.is_file():
        pytest.skip(f"{HALUEVAL} not present")
    result = run_halueval(HALUEVAL, limit=200)
    assert result["rows"] == 200 and result["answers"] == 400
    assert result["accuracy"] > 0.9, result
    assert result["right_accuracy"] > 0.9 and result["hallucinated_accuracy"] > 0.85, result
