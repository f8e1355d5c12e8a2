"""The built-in extractive summariser: central sentences, in order, any language."""

from __future__ import annotations

from cloudpbx.adapters.transcription.base import Utterance
from cloudpbx.adapters.transcription.summary import ExtractiveSummariser, rank, sentences


def lines(*texts: str, speakers: tuple[str | None, ...] = (None,)) -> list[Utterance]:
    return [
        Utterance(float(i), float(i) + 1, speakers[i % len(speakers)], text)
        for i, text in enumerate(texts)
    ]


POLISH_CALL = lines(
    "Dzień dobry, obsługa klienta, słucham.",
    "Dzień dobry, dzwonię w sprawie faktury FV/0042/11, faktura nie dotarła do nas.",
    "Już sprawdzam fakturę FV/0042/11. Faktura na kwotę 1 250 zł została wystawiona w piątek.",
    "Czy mogę prosić o duplikat faktury na adres e-mail?",
    "Oczywiście, wyślę duplikat faktury na adres e-mail jeszcze dzisiaj.",
    "Dziękuję, to wszystko.",
    "Do usłyszenia.",
    speakers=("101", "48500100200"),
)


def test_picks_the_sentences_about_the_topic() -> None:
    summary = ExtractiveSummariser(2).summarise(POLISH_CALL)
    assert "faktur" in summary and "duplikat" in summary
    assert "Do usłyszenia" not in summary and "to wszystko" not in summary
    # Two sentences, each with its speaker.
    assert summary.count("101: ") + summary.count("48500100200: ") == 2


def test_order_follows_the_call_not_the_score() -> None:
    summary = ExtractiveSummariser(3).summarise(POLISH_CALL)
    picked = [
        index
        for index, utterance in enumerate(POLISH_CALL)
        if any(part.strip() and part.strip() in summary for part in utterance.text.split(". "))
    ]
    assert picked == sorted(picked) and len(picked) >= 2


def test_unpunctuated_engine_output_is_one_sentence_per_utterance() -> None:
    call = lines(
        "hello",
        "i am calling about my order it did not arrive yesterday",
        "can you give me the order number please",
        "the order number is four five six seven",
        "thank you your order will be delivered tomorrow morning",
        "goodbye",
    )
    found = sentences(call)
    assert len(found) == len(call)
    summary = ExtractiveSummariser(2).summarise(call)
    assert "order" in summary and "hello" not in summary and "goodbye" not in summary


def test_near_duplicates_are_taken_once() -> None:
    call = lines(
        "the delivery of the printer is late again",
        "the delivery of the printer is late again!",
        "the printer delivery was promised for monday",
        "we will call the courier about the printer",
    )
    summary = ExtractiveSummariser(2).summarise(call)
    assert summary.count("late again") == 1


def test_long_utterances_are_cut_and_summary_is_bounded() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    found = sentences(lines(words))
    assert len(found) == 4 and all(len(s.text.split()) <= 25 for s in found)
    assert len(ExtractiveSummariser(1).summarise(lines(words)).split()) <= 25


def test_degenerate_inputs() -> None:
    summariser = ExtractiveSummariser(3)
    assert summariser.summarise([]) == ""
    assert summariser.summarise(lines("ok")) == "ok."
    assert rank(sentences(lines("a", "b"))) == [0.5, 0.5]
