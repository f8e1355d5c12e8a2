"""`whisper`: faster-whisper (CTranslate2) with a model folder the operator provides.

Nothing is downloaded at run time: `whisper_model_dir` must hold a CTranslate2
conversion of a Whisper model (`model.bin`, `config.json`, `tokenizer.json`,
`vocabulary.*`), e.g. `Systran/faster-whisper-small`, or one made with
`ct2-transformers-converter`. Polish calls need a multilingual model (`small`,
`medium`, `large-v3`; not the `*.en` ones): docs/transcription.md says how to get one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudpbx.adapters.transcription.audio import Samples
from cloudpbx.adapters.transcription.base import Segment
from cloudpbx.adapters.transcription.errors import PermanentError

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
"""Without tokenizer.json faster-whisper would fetch one from the Hugging Face hub."""


def check_model_dir(model_dir: Path | None) -> Path:
    """The model folder, or a PermanentError that says what is missing and where."""
    if model_dir is None:
        raise PermanentError(
            "the whisper engine needs whisper_model_dir: a folder with a CTranslate2 Whisper "
            "model (see docs/transcription.md)"
        )
    if not model_dir.is_dir():
        raise PermanentError(f"whisper_model_dir {model_dir} is not a folder")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise PermanentError(
            f"whisper_model_dir {model_dir} holds no CTranslate2 Whisper model: "
            f"{', '.join(missing)} missing (see docs/transcription.md)"
        )
    return model_dir


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: Path | None,
        *,
        language: str = "",
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        cpu_threads: int = 0,
        vad: bool = True,
    ) -> None:
        folder = check_model_dir(model_dir)
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise PermanentError(
                "faster-whisper is not installed: pip install 'cloudpbx[whisper]'"
            ) from None
        try:
            self._model: Any = WhisperModel(
                str(folder),
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise PermanentError(f"faster-whisper cannot load {folder}: {exc}") from None
        multilingual = bool(getattr(self._model.model, "is_multilingual", True))
        if language and language != "en" and not multilingual:
            raise PermanentError(
                f"the model in {folder} is English-only; language {language!r} needs a "
                "multilingual model (small, medium, large-v3; not *.en)"
            )
        self._language = language or None
        self._beam_size = beam_size
        self._vad = vad

    def recognize(self, samples: Samples) -> list[Segment]:
        segments, _info = self._model.transcribe(
            samples,
            language=self._language,
            beam_size=self._beam_size,
            vad_filter=self._vad,
            condition_on_previous_text=False,
        )
        return [Segment(float(s.start), float(s.end), str(s.text).strip()) for s in segments]
