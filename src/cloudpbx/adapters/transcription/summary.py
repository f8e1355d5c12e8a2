"""`extractive`: the built-in summariser, language-independent and without a model.

It picks the `summary_sentences` most central sentences of the call and gives them in
the order they were said (TextRank, Mihalcea & Tarau 2004):

1. Sentences: each utterance split after `.`, `!`, `?` or `…` (engines without
   punctuation, like PocketSphinx, give one sentence per utterance); sentences over 40
   words are cut into pieces of 25.
2. Words: Unicode word characters, lower-cased; words of one or two letters are left
   out (a crude stop list that works for Polish, English and most European languages).
   Each word is weighted by its inverse sentence frequency, so the words that appear
   everywhere in the call (function words of any language, "yes", "hello") count little.
3. Sentences are nodes of a graph weighted by the cosine similarity of their word
   vectors; PageRank (damping 0.85) scores them. Sentences with fewer than three words
   count half (greetings and "ok" rarely say what the call was about).
4. The best sentences are taken one by one, skipping any too similar (cosine > 0.8) to
   one already taken.

On a two-party recording each sentence keeps its speaker: `101: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloudpbx.adapters.transcription.base import Utterance

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_LONG, _PIECE = 40, 25
_DAMPING, _ROUNDS = 0.85, 50
_SIMILAR = 0.8


@dataclass(frozen=True, slots=True)
class _Sentence:
    speaker: str | None
    text: str
    terms: tuple[str, ...]


def sentences(utterances: Sequence[Utterance]) -> list[_Sentence]:
    found: list[_Sentence] = []
    for utterance in utterances:
        for part in _SENTENCE_END.split(utterance.text.strip()):
            words = part.split()
            pieces = (
                [" ".join(words[i : i + _PIECE]) for i in range(0, len(words), _PIECE)]
                if len(words) > _LONG
                else [part]
            )
            for piece in pieces:
                if piece.strip():
                    found.append(_Sentence(utterance.speaker, piece.strip(), _terms(piece)))
    return found


def _terms(text: str) -> tuple[str, ...]:
    return tuple(w for w in _WORD.findall(text.lower()) if len(w) > 2 or w.isdigit())


def rank(found: Sequence[_Sentence]) -> list[float]:
    """TextRank score of each sentence."""
    count = len(found)
    vocabulary: dict[str, int] = {}
    for sentence in found:
        for term in sentence.terms:
            vocabulary.setdefault(term, len(vocabulary))
    if count == 0:
        return []
    if not vocabulary:
        return [1.0 / count] * count
    matrix = np.zeros((count, len(vocabulary)))
    for row, sentence in enumerate(found):
        for term in sentence.terms:
            matrix[row, vocabulary[term]] += 1.0
    frequency = np.count_nonzero(matrix, axis=0)
    matrix *= np.log(1.0 + count / frequency)
    norms = np.linalg.norm(matrix, axis=1)
    norms[norms == 0] = 1.0
    unit = matrix / norms[:, None]
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, 0.0)
    weights = similarity.sum(axis=1)
    transition = np.divide(
        similarity,
        weights[:, None],
        out=np.full_like(similarity, 1.0 / count),
        where=weights[:, None] > 0,
    )
    scores = np.full(count, 1.0 / count)
    for _ in range(_ROUNDS):
        scores = (1 - _DAMPING) / count + _DAMPING * (transition.T @ scores)
    lengths = np.array([len(sentence.terms) for sentence in found])
    scores = np.where(lengths < 3, scores * 0.5, scores)
    return [float(score) for score in scores]


def _vector(sentence: _Sentence) -> dict[str, float]:
    vector: dict[str, float] = {}
    for term in sentence.terms:
        vector[term] = vector.get(term, 0.0) + 1.0
    return vector


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(value * b.get(term, 0.0) for term, value in a.items())
    norm = (sum(v * v for v in a.values()) * sum(v * v for v in b.values())) ** 0.5
    return dot / norm if norm else 0.0


class ExtractiveSummariser:
    name = "extractive"

    def __init__(self, count: int = 3) -> None:
        self.count = count

    def summarise(self, utterances: Sequence[Utterance]) -> str:
        found = sentences(utterances)
        scores = rank(found)
        order = sorted(range(len(found)), key=lambda i: (-scores[i], i))
        chosen: list[int] = []
        for index in order:
            if len(chosen) == self.count:
                break
            vector = _vector(found[index])
            if any(_cosine(vector, _vector(found[j])) > _SIMILAR for j in chosen):
                continue
            chosen.append(index)
        return " ".join(_render(found[i]) for i in sorted(chosen))


def _render(sentence: _Sentence) -> str:
    text = sentence.text if sentence.text[-1] in ".!?…" else sentence.text + "."
    return f"{sentence.speaker}: {text}" if sentence.speaker else text
