"""Engine wiring: the factory's choice per PBX, faster-whisper's model folder and calls,
PocketSphinx's options, and what a pipeline makes of silence."""

from __future__ import annotations

import sys
import types
import wave
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cloudpbx.adapters.transcription import EngineFactory, Pipeline
from cloudpbx.adapters.transcription.errors import PermanentError
from cloudpbx.adapters.transcription.sphinx import PocketsphinxEngine
from cloudpbx.adapters.transcription.summary import ExtractiveSummariser
from cloudpbx.adapters.transcription.whisper import WhisperEngine, check_model_dir
from cloudpbx.settings import Settings
from tests.live import make_settings


def model_dir(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "whisper-small-ct2"
    folder.mkdir(exist_ok=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def test_the_model_folder_must_be_given_and_complete(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="needs whisper_model_dir"):
        check_model_dir(None)
    with pytest.raises(PermanentError, match="is not a folder"):
        check_model_dir(tmp_path / "nowhere")
    folder = model_dir(tmp_path, "model.bin", "config.json")
    with pytest.raises(PermanentError, match=r"tokenizer\.json missing"):
        check_model_dir(folder)
    model_dir(tmp_path, "tokenizer.json")
    assert check_model_dir(folder) == folder


class _Segment:
    def __init__(self, start: float, end: float, text: str) -> None:
        self.start, self.end, self.text = start, end, text


class _FakeWhisperModel:
    """Stands in for faster_whisper.WhisperModel: records how it is used."""

    created: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []
    calls: ClassVar[list[tuple[Any, dict[str, Any]]]] = []
    multilingual = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.created.append((args, kwargs))
        self.model = types.SimpleNamespace(is_multilingual=self.multilingual)

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.calls.append((audio, kwargs))
        segments = iter([_Segment(0.4, 1.9, " Dzień dobry,"), _Segment(2.0, 3.5, " słucham.")])
        return segments, types.SimpleNamespace(language="pl")


@pytest.fixture
def fake_faster_whisper(monkeypatch: pytest.MonkeyPatch) -> type[_FakeWhisperModel]:
    module = types.ModuleType("faster_whisper")
    module.WhisperModel = _FakeWhisperModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "faster_whisper", module)
    _FakeWhisperModel.created, _FakeWhisperModel.calls = [], []
    _FakeWhisperModel.multilingual = True
    return _FakeWhisperModel


def test_whisper_loads_the_folder_offline_and_maps_segments(
    tmp_path: Path, fake_faster_whisper: type[_FakeWhisperModel]
) -> None:
    folder = model_dir(tmp_path, "model.bin", "config.json", "tokenizer.json")
    engine = WhisperEngine(
        folder, language="pl", device="cpu", compute_type="int8", beam_size=3, cpu_threads=2
    )
    [(args, kwargs)] = fake_faster_whisper.created
    assert args == (str(folder),)
    assert kwargs == {
        "device": "cpu",
        "compute_type": "int8",
        "cpu_threads": 2,
        "local_files_only": True,
    }
    samples = np.zeros(16000, np.float32)
    segments = engine.recognize(samples)
    assert [(s.start, s.end, s.text) for s in segments] == [
        (0.4, 1.9, "Dzień dobry,"),
        (2.0, 3.5, "słucham."),
    ]
    [(audio, options)] = fake_faster_whisper.calls
    assert audio is samples
    assert options["language"] == "pl" and options["beam_size"] == 3
    assert options["vad_filter"] is True


def test_an_english_only_model_cannot_do_polish(
    tmp_path: Path, fake_faster_whisper: type[_FakeWhisperModel]
) -> None:
    fake_faster_whisper.multilingual = False
    folder = model_dir(tmp_path, "model.bin", "config.json", "tokenizer.json")
    with pytest.raises(PermanentError, match="English-only"):
        WhisperEngine(folder, language="pl")
    WhisperEngine(folder, language="en")  # fine for English


def test_whisper_without_its_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    folder = model_dir(tmp_path, "model.bin", "config.json", "tokenizer.json")
    with pytest.raises(PermanentError, match=r"pip install 'cloudpbx\[whisper\]'"):
        WhisperEngine(folder)


def settings(tmp_path: Path, **values: Any) -> Settings:
    return make_settings(tmp_path, **values)


def test_the_factory_picks_each_pbxs_engine(tmp_path: Path) -> None:
    factory = EngineFactory(
        settings(
            tmp_path,
            transcription_engine="pocketsphinx",
            transcription_engines={"Quiet": "none", "Hosted": "openai"},
            openai_url="http://127.0.0.1:9/v1",
        )
    )
    try:
        assert factory.engine_name("MojaCentrala") == "pocketsphinx"
        assert not factory.enabled("Quiet") and factory("Quiet") is None
        hosted = factory("Hosted")
        assert hosted is not None and hosted.name == "openai+extractive"
        local = factory("MojaCentrala")
        assert local is not None and local is factory("Other")  # built once, shared
        assert factory.check() == []
    finally:
        factory.close()


def test_the_factory_reports_engines_that_cannot_run(tmp_path: Path) -> None:
    factory = EngineFactory(settings(tmp_path, transcription_engine="whisper"))
    [problem] = factory.check()
    assert problem.startswith("whisper: the whisper engine needs whisper_model_dir")
    with pytest.raises(PermanentError):
        factory("MojaCentrala")
    with pytest.raises(ValueError, match="summariser 'abstractive'"):
        EngineFactory(settings(tmp_path, summariser="abstractive"))


def test_pocketsphinx_options(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"hmm .* does not exist"):
        PocketsphinxEngine(hmm=tmp_path / "no-model")
    engine = PocketsphinxEngine()
    assert engine.recognize(np.zeros(16000, np.float32)) == []


async def test_silence_is_an_empty_transcript(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(8000 * 4))
    pipeline = Pipeline(PocketsphinxEngine(), ExtractiveSummariser())
    result = await pipeline.transcribe(path)
    assert (result.content, result.summary) == ("", "")
