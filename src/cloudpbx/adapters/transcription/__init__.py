"""Transcription engines and summarisers (docs/transcription.md).

- engines (`SpeechEngine`): `pocketsphinx` (sphinx.py), `whisper` (whisper.py),
  `openai` (openai_compat.py);
- summarisers (`Summariser`): `extractive` (summary.py), `openai` (openai_compat.py);
- `Pipeline` (base.py): one of each behind the TranscriptionEngine port;
- `EngineFactory`: the pipeline of each PBX, as the settings name it.
"""

from __future__ import annotations

from cloudpbx.adapters.transcription.base import (
    NoSummary,
    Pipeline,
    Segment,
    SpeechEngine,
    Summariser,
    Utterance,
)
from cloudpbx.adapters.transcription.errors import (
    PermanentError,
    TranscriptionError,
    TransientError,
)
from cloudpbx.settings import Settings

ENGINES = ("pocketsphinx", "whisper", "openai", "none")
SUMMARISERS = ("extractive", "openai", "none")

__all__ = [
    "ENGINES",
    "SUMMARISERS",
    "EngineFactory",
    "PermanentError",
    "Pipeline",
    "Segment",
    "SpeechEngine",
    "Summariser",
    "TranscriptionError",
    "TransientError",
    "Utterance",
    "build_speech_engine",
    "build_summariser",
]


def build_speech_engine(settings: Settings, name: str) -> SpeechEngine:
    """A new engine of kind `name`; PermanentError when it cannot run (missing package or
    model, incomplete settings)."""
    if name == "pocketsphinx":
        from cloudpbx.adapters.transcription.sphinx import PocketsphinxEngine

        return PocketsphinxEngine(
            settings.pocketsphinx_hmm, settings.pocketsphinx_lm, settings.pocketsphinx_dict
        )
    if name == "whisper":
        from cloudpbx.adapters.transcription.whisper import WhisperEngine

        return WhisperEngine(
            settings.whisper_model_dir,
            language=settings.transcription_language,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            beam_size=settings.whisper_beam_size,
            cpu_threads=settings.whisper_cpu_threads,
            vad=settings.whisper_vad,
        )
    if name == "openai":
        from cloudpbx.adapters.transcription.openai_compat import OpenAIEngine

        return OpenAIEngine(
            settings.openai_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            language=settings.transcription_language,
            timeout=settings.openai_timeout,
            chunk_seconds=settings.openai_chunk_seconds,
        )
    raise PermanentError(f"unknown transcription engine {name!r}; use one of {ENGINES}")


def build_summariser(settings: Settings) -> Summariser:
    name = settings.summariser
    if name == "extractive":
        from cloudpbx.adapters.transcription.summary import ExtractiveSummariser

        return ExtractiveSummariser(settings.summary_sentences)
    if name == "openai":
        from cloudpbx.adapters.transcription.openai_compat import ChatSummariser

        return ChatSummariser(
            settings.summary_url or settings.openai_url,
            api_key=settings.summary_api_key or settings.openai_api_key,
            model=settings.summary_model,
            prompt=settings.summary_prompt,
            timeout=settings.summary_timeout,
        )
    if name == "none":
        return NoSummary()
    raise PermanentError(f"unknown summariser {name!r}; use one of {SUMMARISERS}")


class EngineFactory:
    """The pipeline of each PBX: `transcription_engines[pbx]`, else `transcription_engine`.

    Engines are built on first use and kept for the life of the process (a Whisper model
    loads once per worker process, not once per call). Unknown names are refused when the
    factory is made, so a typo in the configuration stops the server or worker at start.
    """

    def __init__(self, settings: Settings) -> None:
        for pbx, name in {
            "*": settings.transcription_engine,
            **settings.transcription_engines,
        }.items():
            if name not in ENGINES:
                raise ValueError(
                    f"transcription engine {name!r} (for {pbx}): use one of {', '.join(ENGINES)}"
                )
        if settings.summariser not in SUMMARISERS:
            raise ValueError(
                f"summariser {settings.summariser!r}: use one of {', '.join(SUMMARISERS)}"
            )
        self._settings = settings
        self._pipelines: dict[str, Pipeline] = {}
        self._summariser: Summariser | None = None

    def engine_name(self, pbx: str) -> str:
        return self._settings.transcription_engines.get(pbx, self._settings.transcription_engine)

    def enabled(self, pbx: str) -> bool:
        return self.engine_name(pbx) != "none"

    def used_engines(self) -> set[str]:
        names = {
            self._settings.transcription_engine,
            *self._settings.transcription_engines.values(),
        }
        return names - {"none"}

    def __call__(self, pbx: str) -> Pipeline | None:
        """The PBX's pipeline, None when its transcription is off; PermanentError when the
        engine cannot be built."""
        name = self.engine_name(pbx)
        return None if name == "none" else self._build(name)

    def close(self) -> None:
        for pipeline in self._pipelines.values():
            pipeline.close()
        self._pipelines.clear()

    def check(self) -> list[str]:
        """Build every engine the settings use; the reasons of those that cannot run."""
        problems = []
        for name in sorted(self.used_engines()):
            try:
                self._build(name)
            except TranscriptionError as exc:
                problems.append(f"{name}: {exc}")
        return problems

    def _build(self, name: str) -> Pipeline:
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            if self._summariser is None:
                self._summariser = build_summariser(self._settings)
            pipeline = Pipeline(build_speech_engine(self._settings, name), self._summariser)
            self._pipelines[name] = pipeline
        return pipeline
