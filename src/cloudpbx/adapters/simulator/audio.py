"""Speech-like synthetic audio and WAV files shaped like Asterisk's MixMonitor output.

The file is what `MixMonitor(${UNIQUEID}.wav)` writes: RIFF WAV, 8 kHz, 16-bit, mono.
The sound is no speech synthesis, only something that sounds like two people talking:
syllables are vowel-shaped tones (a few harmonics of a voice pitch weighted by the vowel's
formants, some starting with a hiss like a consonant), grouped into words, placed where
the dialogue's timeline puts each utterance, over a faint line noise. A low and a high
voice tell the speakers apart.

Cheap by design (no numpy): each voice's syllables are computed once and cached; a
recording is line noise with syllables copied into it by slice assignment.
"""

from __future__ import annotations

import functools
import math
import os
import random
import sys
import wave
from array import array
from collections.abc import Sequence
from pathlib import Path

from cloudpbx.adapters.simulator.conversation import Line
from cloudpbx.adapters.simulator.sim import Speaker

RATE = 8000
"""Samples per second, as Asterisk records narrowband calls."""

_PERIODS = {False: (72, 62), True: (40, 36)}
"""Voice pitch as samples per period (integer, so a cycle tiles exactly): 111/129 Hz for
lower voices, 200/222 Hz for higher ones."""

_FORMANTS = ((730, 1090), (530, 1840), (270, 2290), (570, 840), (300, 870), (400, 1500))
"""First two formants (Hz) of a, e, i, o, u, y."""

_LENGTHS = (1100, 1900)
_AMPLITUDE = 7000.0
_HISS = 320


def render(lines: Sequence[Line], seconds: float) -> array[int]:
    """`seconds` of audio with every line spoken where the timeline places it."""
    total = max(int(seconds * RATE), 1)
    noise = _line_noise()
    samples = (noise * (total // len(noise) + 1))[:total]
    for line in lines:
        syllables = _syllables(_period(line.speaker))
        words = random.Random(line.text)
        pos, end = int(line.start * RATE), min(int(line.end * RATE), total)
        while pos < end:
            for _ in range(words.randint(1, 3)):
                syllable = words.choice(syllables)
                count = min(len(syllable), end - pos)
                if count <= 0:
                    break
                samples[pos : pos + count] = syllable[:count]
                pos += count + 40
            pos += words.randint(480, 1100)
    return samples


def write_wav(path: Path, samples: array[int]) -> int:
    """Write a mono 16-bit 8 kHz WAV atomically (readers never see half a file); its size."""
    data = samples
    if sys.byteorder == "big":
        data = array("h", samples)
        data.byteswap()
    partial = path.with_name(path.name + ".part")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(data.tobytes())
    os.replace(partial, path)
    return path.stat().st_size


def _period(speaker: Speaker) -> int:
    return _PERIODS[speaker.female][len(speaker.name) % 2]


@functools.cache
def _syllables(period: int) -> tuple[array[int], ...]:
    """Every vowel in two lengths, plain and with a consonant-like hiss before it."""
    hiss = _line_noise()[:_HISS]
    result: list[array[int]] = []
    for formants in _FORMANTS:
        cycle = _cycle(period, formants)
        for length in _LENGTHS:
            vowel = array(
                "h",
                (int(_AMPLITUDE * cycle[n % period] * _envelope(n, length)) for n in range(length)),
            )
            result.append(vowel)
            result.append(array("h", (s * 20 for s in hiss)) + vowel)
    return tuple(result)


def _cycle(period: int, formants: tuple[int, int]) -> list[float]:
    """One period of a voiced vowel: harmonics weighted by two formant resonances."""
    pitch = RATE / period
    first, second = formants
    weights = [
        (
            1.0 / (1.0 + ((k * pitch - first) / 90.0) ** 2)
            + 0.6 / (1.0 + ((k * pitch - second) / 120.0) ** 2)
            + 0.03
        )
        / math.sqrt(k)
        for k in range(1, int(3400 / pitch) + 1)
    ]
    cycle = [
        sum(w * math.sin(2.0 * math.pi * k * n / period) for k, w in enumerate(weights, 1))
        for n in range(period)
    ]
    peak = max(abs(v) for v in cycle)
    return [v / peak for v in cycle]


def _envelope(n: int, length: int) -> float:
    """Soft attack and decay, so syllables do not click."""
    attack, release = length * 0.15, length * 0.35
    if n < attack:
        return 0.5 - 0.5 * math.cos(math.pi * n / attack)
    if n > length - release:
        return 0.5 - 0.5 * math.cos(math.pi * (length - n) / release)
    return 1.0


@functools.cache
def _line_noise() -> array[int]:
    """Half a second of faint noise, the hiss of a phone line between words."""
    rng = random.Random(8000)
    return array("h", (int(rng.gauss(0.0, 40.0)) for _ in range(RATE // 2)))
