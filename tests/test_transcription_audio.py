"""Reading recordings: WAV variants, Asterisk's raw formats, G.711, resampling, parties."""

from __future__ import annotations

import io
import shutil
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from cloudpbx.adapters.transcription.audio import (
    Audio,
    chunks,
    parse_wav,
    parties,
    read_audio,
    resample,
    wav_bytes,
)
from cloudpbx.adapters.transcription.errors import PermanentError

ASTERISK = Path(__file__).parent / "data" / "originate-1795838273.0.wav"
"""A call recorded by MixMonitor in the Asterisk lab (Polish speech)."""


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pcm_wav(channels: list[np.ndarray], rate: int, width: int = 2) -> bytes:
    frames = np.stack(channels, axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(width)
        out.setframerate(rate)
        if width == 1:
            out.writeframes((frames * 127 + 128).astype(np.uint8).tobytes())
        else:
            out.writeframes((frames * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def wav_with(tag: int, bits: int, channels: int, rate: int, payload: bytes) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to skip
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def g711_reference(law: str) -> np.ndarray:
    """The standard library's G.711 expansion (audioop, until Python 3.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    linear = audioop.ulaw2lin(codes, 2) if law == "ulaw" else audioop.alaw2lin(codes, 2)
    return np.frombuffer(linear, dtype="<i2") / 32768.0


def test_pcm16_mono_and_stereo_keep_channels_apart() -> None:
    left, right = tone(300, 0.5, 8000), tone(1200, 0.5, 8000, 0.25)
    audio = parse_wav(pcm_wav([left, right], 8000))
    assert audio.rate == 8000 and len(audio.channels) == 2
    assert np.allclose(audio.channels[0], left, atol=1e-4)
    assert np.allclose(audio.channels[1], right, atol=1e-4)
    assert audio.duration == pytest.approx(0.5)


def test_other_sample_encodings() -> None:
    signal = tone(440, 0.1, 8000)
    assert np.allclose(parse_wav(pcm_wav([signal], 8000, 1)).channels[0], signal, atol=0.02)
    floats = wav_with(3, 32, 1, 16000, signal.astype("<f4").tobytes())
    assert np.allclose(parse_wav(floats).channels[0], signal)
    ints = (signal * (1 << 23)).astype(np.int32)
    packed = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    assert np.allclose(parse_wav(wav_with(1, 24, 1, 8000, packed)).channels[0], signal, atol=1e-6)


@pytest.mark.parametrize(("law", "tag"), [("ulaw", 7), ("alaw", 6)])
def test_g711_in_wav_and_raw_match_the_standard(law: str, tag: int, tmp_path: Path) -> None:
    reference = g711_reference(law)
    codes = bytes(range(256))
    assert np.array_equal(parse_wav(wav_with(tag, 8, 1, 8000, codes)).channels[0], reference)
    raw = tmp_path / f"call.{law}"
    raw.write_bytes(codes)
    decoded = read_audio(raw)
    assert decoded.rate == 8000 and np.array_equal(decoded.channels[0], reference)


def test_raw_signed_linear(tmp_path: Path) -> None:
    path = tmp_path / "call.sln16"
    path.write_bytes((tone(500, 0.2, 16000) * 32767).astype("<i2").tobytes())
    audio = read_audio(path)
    assert audio.rate == 16000 and audio.duration == pytest.approx(0.2)


def test_unreadable_input_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(PermanentError):
        read_audio(broken)


def test_gsm_goes_through_ffmpeg_or_says_it_is_needed(tmp_path: Path) -> None:
    gsm = tmp_path / "call.gsm"
    gsm.write_bytes(b"\xd0" * 33 * 50)
    if shutil.which("ffmpeg") is None:
        with pytest.raises(PermanentError, match="install ffmpeg"):
            read_audio(gsm)
    else:
        assert read_audio(gsm).rate == 8000


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_resample_keeps_the_signal() -> None:
    narrow = tone(1000, 1.0, 8000)
    wide = resample(narrow, 8000, 16000)
    assert len(wide) == 16000
    assert dominant(wide, 16000) == pytest.approx(1000, abs=2)
    # Away from the edges the interpolated wave is the 1 kHz sine at 16 kHz.
    assert np.allclose(wide[100:-100], tone(1000, 1.0, 16000)[100:-100], atol=0.01)
    odd = resample(tone(700, 1.0, 22050), 22050, 16000)
    assert len(odd) == 16000 and dominant(odd, 16000) == pytest.approx(700, abs=2)


def test_resample_filters_what_would_alias() -> None:
    # 11 kHz at 48 kHz would fold to 5 kHz at 16 kHz without the low-pass filter.
    high = resample(tone(11000, 1.0, 48000), 48000, 16000)
    low = resample(tone(3000, 1.0, 48000), 48000, 16000)
    assert np.sqrt(np.mean(high[200:-200] ** 2)) < 0.005
    assert np.sqrt(np.mean(low[200:-200] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_parties() -> None:
    speech, other, silence = tone(200, 1, 8000), tone(300, 1, 8000), np.zeros(8000, np.float32)
    assert len(parties(Audio(8000, (speech,)))) == 1
    two = parties(Audio(8000, (speech, other)))
    assert len(two) == 2 and two[0] is speech and two[1] is other
    # The same signal on both channels is one mixed recording.
    assert len(parties(Audio(8000, (speech, speech.copy())))) == 1
    # A silent channel is a party that said nothing.
    assert parties(Audio(8000, (speech, silence)))[1] is None
    assert parties(Audio(8000, (silence,))) == [None]


def test_chunks_cut_in_the_quiet() -> None:
    rate = 1000
    pieces = [tone(50, 9.5, rate), np.zeros(300, np.float32), tone(50, 5, rate)]
    signal = np.concatenate(pieces)
    cut = chunks(signal, rate, 10.0)
    assert len(cut) == 2
    assert cut[1][0] == pytest.approx(9.65, abs=0.16)  # inside the 0.3 s pause
    assert sum(len(piece) for _start, piece in cut) == len(signal)
    assert len(chunks(signal[:5000], rate, 10.0)) == 1


def test_wav_bytes_round_trip() -> None:
    signal = tone(440, 0.25, 16000)
    audio = parse_wav(wav_bytes(signal, 16000))
    assert audio.rate == 16000 and np.allclose(audio.channels[0], signal, atol=1e-4)


def test_the_asterisk_recording_reads_as_telephone_audio() -> None:
    """The lab's MixMonitor file: 8 kHz, 16-bit, mono, 5 s of a real call."""
    audio = read_audio(ASTERISK)
    assert audio.rate == 8000 and len(audio.channels) == 1
    assert audio.duration == pytest.approx(5.02, abs=0.01)
    assert parties(audio)[0] is not None
