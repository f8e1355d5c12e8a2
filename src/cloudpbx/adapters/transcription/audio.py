"""Reading call recordings into samples, telephone formats included, and resampling.

Asterisk writes `wav` (16-bit PCM, 8 kHz, mono; two channels, one party each, when
MixMonitor's `D` output is converted to WAV: docs/transcription.md), `WAV`/`wav49`
(GSM in a WAV wrapper), `gsm`, `ulaw`, `alaw` and `sln`/`raw` (headerless signed linear).
WAV files in PCM (8/16/24/32-bit), IEEE float, A-law and µ-law are decoded here, and so
are the headerless `ulaw`, `alaw`, `sln*` files; anything else (GSM, MP3, Ogg, ...) goes
through `ffmpeg` when it is installed, and is a permanent failure when not.

Engines want 16 kHz mono (`resample`): narrowband 8 kHz audio is upsampled with a
windowed-sinc interpolator (the band above 4 kHz stays empty, which the models cope with),
wideband audio is low-pass filtered before it is decimated, so nothing aliases.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from cloudpbx.adapters.transcription.errors import PermanentError

Samples = NDArray[np.float32]
"""Mono audio as float32 in [-1, 1]."""

ENGINE_RATE = 16_000
"""What every local engine here takes (and what is sent to OpenAI-compatible servers)."""

_RAW_FORMATS = {
    "sln": ("s16", 8_000),
    "raw": ("s16", 8_000),
    "sln12": ("s16", 12_000),
    "sln16": ("s16", 16_000),
    "sln24": ("s16", 24_000),
    "sln32": ("s16", 32_000),
    "sln44": ("s16", 44_100),
    "sln48": ("s16", 48_000),
    "ulaw": ("ulaw", 8_000),
    "pcm": ("ulaw", 8_000),
    "ul": ("ulaw", 8_000),
    "mu": ("ulaw", 8_000),
    "alaw": ("alaw", 8_000),
    "al": ("alaw", 8_000),
}
"""Asterisk's headerless formats (by file extension): sample encoding and rate."""

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: one float32 array per channel, all of the same length."""

    rate: int
    channels: tuple[Samples, ...]

    @property
    def duration(self) -> float:
        return len(self.channels[0]) / self.rate if self.channels else 0.0

    def mono(self) -> Samples:
        if len(self.channels) == 1:
            return self.channels[0]
        mixed: Samples = np.stack(self.channels).mean(axis=0, dtype=np.float32)
        return mixed


def read_audio(path: Path, fmt: str = "") -> Audio:
    """Decode the recording at `path`; `fmt` (else the extension) names headerless formats."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PermanentError(f"recording file {path} does not exist") from None
    except OSError as exc:
        raise PermanentError(f"cannot read recording {path}: {exc}") from None
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return parse_wav(data)
        except _NeedsFfmpeg as exc:
            return _ffmpeg(path, str(exc))
    if kind in _RAW_FORMATS:
        encoding, rate = _RAW_FORMATS[kind]
        return Audio(rate, (_decode(data, encoding, 1)[0],))
    return _ffmpeg(path, f"format {kind or 'unknown'!r}")


class _NeedsFfmpeg(Exception):
    """A WAV wrapper around a codec this module does not decode (GSM, ADPCM, ...)."""


def parse_wav(data: bytes) -> Audio:
    """A RIFF/WAVE file in PCM, IEEE float, A-law or µ-law, any channel count."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PermanentError("not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body_start = pos + 8
        if chunk == b"data":
            # A streamed WAV (ffmpeg to a pipe, a recording still being written) may carry
            # a size of 0 or 0xFFFFFFFF: the data then runs to the end of the file.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(body_start + size, len(data))
            payload = data[body_start:end]
            break
        if chunk == b"fmt ":
            fmt = data[body_start : body_start + size]
        pos = body_start + size + (size & 1)
    if fmt is None or len(fmt) < 16 or payload is None:
        raise PermanentError("WAV file without a format or data chunk")
    tag, channels, rate, _byte_rate, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if channels < 1 or rate < 1000 or block < 1:
        raise PermanentError(f"WAV header makes no sense: {channels} channels at {rate} Hz")
    encodings = {
        (_PCM, 8): "u8",
        (_PCM, 16): "s16",
        (_PCM, 24): "s24",
        (_PCM, 32): "s32",
        (_FLOAT, 32): "f32",
        (_FLOAT, 64): "f64",
        (_ALAW, 8): "alaw",
        (_ULAW, 8): "ulaw",
    }
    encoding = encodings.get((tag, bits))
    if encoding is None:
        raise _NeedsFfmpeg(f"WAV codec {tag:#x} with {bits} bits")
    payload = payload[: len(payload) - len(payload) % block]
    return Audio(rate, _decode(payload, encoding, channels))


def _decode(data: bytes, encoding: str, channels: int) -> tuple[Samples, ...]:
    if encoding == "s24":
        raw = np.frombuffer(data[: len(data) - len(data) % 3], dtype=np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8)
        ints |= raw[:, 2].astype(np.int8).astype(np.int32) << 16
        flat = ints.astype(np.float32) / float(1 << 23)
    elif encoding in ("ulaw", "alaw"):
        table = _ULAW_TABLE if encoding == "ulaw" else _ALAW_TABLE
        flat = table[np.frombuffer(data, dtype=np.uint8)]
    else:
        dtype, scale, offset = {
            "u8": ("u1", 128.0, 128.0),
            "s16": ("<i2", 32768.0, 0.0),
            "s32": ("<i4", 2147483648.0, 0.0),
            "f32": ("<f4", 1.0, 0.0),
            "f64": ("<f8", 1.0, 0.0),
        }[encoding]
        width = np.dtype(dtype).itemsize
        values = np.frombuffer(data[: len(data) - len(data) % width], dtype=dtype)
        flat = ((values.astype(np.float64) - offset) / scale).astype(np.float32)
    flat = flat[: len(flat) - len(flat) % channels]
    frames = flat.reshape(-1, channels)
    return tuple(np.ascontiguousarray(frames[:, c]) for c in range(channels))


def _g711_tables() -> tuple[Samples, Samples]:
    """ITU-T G.711 µ-law and A-law expansion, as 256-entry lookup tables."""
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    ulaw = np.where(u & 0x80, -magnitude, magnitude)
    a = codes ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    alaw = np.where(a & 0x80, magnitude, -magnitude)
    return (ulaw / 32768.0).astype(np.float32), (alaw / 32768.0).astype(np.float32)


_ULAW_TABLE, _ALAW_TABLE = _g711_tables()


def _ffmpeg(path: Path, what: str) -> Audio:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise PermanentError(f"cannot decode {what} of {path.name}: install ffmpeg for it")
    command = [binary, "-nostdin", "-v", "error", "-i", str(path), "-f", "wav", "-c:a"]
    try:
        done = subprocess.run(
            [*command, "pcm_s16le", "-"], capture_output=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(f"ffmpeg took too long to decode {path.name}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise PermanentError(f"ffmpeg cannot decode {path.name}: {message[-1] if message else ''}")
    return parse_wav(done.stdout)


def resample(samples: Samples, rate: int, target: int = ENGINE_RATE) -> Samples:
    """`samples` at `rate` as `target` Hz: windowed-sinc interpolation (Blackman window,
    16 zero crossings each side), low-passed below the lower Nyquist frequency.

    Output sample n sits at input time n·rate/target, whose fractional part takes only
    `target/gcd` values: the kernel is computed once per such phase (at most 4096; finer
    ratios round to the nearest of 4096), then applied tap by tap over the whole signal.
    """
    if rate == target or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    divisor = math.gcd(rate, target)
    up, down = target // divisor, rate // divisor
    phases = up if up <= 4096 else 4096
    cutoff = 0.97 * min(1.0, target / rate)  # of the input's Nyquist frequency
    half = math.ceil(16 / cutoff)  # taps each side, in input samples
    taps = np.arange(-half + 1, half + 1)
    distance = (np.arange(phases) / phases)[:, None] - taps[None, :]
    window = (
        0.42 + 0.5 * np.cos(np.pi * distance / half) + 0.08 * np.cos(2 * np.pi * distance / half)
    )
    kernel = (cutoff * np.sinc(cutoff * distance) * window).astype(np.float32)
    count = int(len(samples) * target // rate)
    position = np.arange(count, dtype=np.int64) * down
    base = position // up
    phase = ((position % up) * phases // up) if phases != up else position % up
    padded = np.concatenate(
        [np.zeros(half, np.float32), samples.astype(np.float32), np.zeros(half + 1, np.float32)]
    )
    out = np.zeros(count, dtype=np.float32)
    for column, tap in enumerate(taps):
        out += kernel[phase, column] * padded[base + tap + half]
    return out


def pcm16(samples: Samples) -> bytes:
    """Little-endian signed 16-bit samples (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_bytes(samples: Samples, rate: int) -> bytes:
    """A mono 16-bit PCM WAV file in memory."""
    data = pcm16(samples)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(data),
    )
    return header + data


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


SILENCE_RMS = 3e-4
"""Below this RMS (about -70 dBFS) a channel carries no speech worth decoding."""


def parties(audio: Audio) -> list[Samples | None]:
    """The audio of each party: two entries for a recording with one party per channel
    (None where that channel is silent), one entry otherwise.

    A stereo file whose channels carry the same signal (a mono mix saved as stereo) is one
    party, as is anything with more than two channels (mixed down).
    """
    if len(audio.channels) != 2:
        mono = audio.mono()
        return [mono if rms(mono) >= SILENCE_RMS else None]
    left, right = audio.channels
    level = max(rms(left), rms(right))
    if level < SILENCE_RMS:
        return [None]
    if rms(left - right) < 0.05 * level:
        return [audio.mono()]
    return [channel if rms(channel) >= SILENCE_RMS else None for channel in (left, right)]


def chunks(samples: Samples, rate: int, max_seconds: float) -> list[tuple[float, Samples]]:
    """`samples` cut into pieces of at most `max_seconds`, each with its start time.

    A cut goes at the quietest 20 ms within the last tenth of the piece, so that it
    falls between words rather than through one.
    """
    limit = int(max_seconds * rate)
    if len(samples) <= limit:
        return [(0.0, samples)]
    frame = max(1, rate // 50)
    pieces: list[tuple[float, Samples]] = []
    start = 0
    while len(samples) - start > limit:
        window_start = start + limit - limit // 10
        window = samples[window_start : start + limit]
        frames = len(window) // frame
        if frames:
            energy = np.square(window[: frames * frame].reshape(frames, frame)).sum(axis=1)
            cut = window_start + int(np.argmin(energy)) * frame + frame // 2
        else:
            cut = start + limit
        pieces.append((start / rate, samples[start:cut]))
        start = cut
    pieces.append((start / rate, samples[start:]))
    return pieces
