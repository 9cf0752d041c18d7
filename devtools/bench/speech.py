"""Speech: real-time factor of speech to text and text to speech, through the plugin and the core client.

The real offline models: Whisper tiny.en (faster-whisper) and the Piper joe voice. The clips
to transcribe are spoken by the text-to-speech model itself (WAV): a short one (~5 s) and, in
the full run, a long one (~35 s; different sentences, since repeated ones make Whisper fall
back to sampling). Real-time factor = processing time / audio duration (below 1: faster than
real time). For speech synthesis the audio is the MP3 streamed sentence by sentence (both
sides ask for MP3); the time to the first piece is reported too.
"""

from __future__ import annotations

import io
import time
import wave
from typing import Any

import av

from devtools.bench import stats
from devtools.bench.report_tools import Report
from devtools.bench.stack import Stack
from tritonmm import contract, speech, speech_synthesis

NAME = "speech"
STT, TTS = "speech_to_text", "text_to_speech"
SHORT = "The quick brown fox jumps over the lazy dog. Offline speech synthesis works."
THREE = "The quick brown fox jumps over the lazy dog. Offline speech works on this machine. Goodbye for now."
LONG_SENTENCES = [
    "Welcome to the weekly planning meeting.", "First we review the numbers from last month.",
    "Sales grew in every region except the north.", "The new warehouse opens in the spring.",
    "Please send your travel plans before Friday.", "The design team will present three options.",
    "We still need a volunteer for the booth at the fair.", "Lunch will be served in the small kitchen.",
    "The printer on the second floor is broken again.", "Our customers asked for a darker colour.",
    "Marketing wants the video finished by the end of the month.", "The budget for training doubled this year.",
    "Two new engineers join the team on Monday.", "Remember to lock the door when you leave.",
    "Thank you all and see you next week.",
]  # fmt: skip


def models(quick: bool) -> list[str]:
    return [STT, TTS]


def checkpoints(quick: bool) -> dict:
    return {}


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


def mp3_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data), format="mp3") as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def _speak_wav(stack: Stack, text: str) -> bytes:
    caps = stack.client.capabilities(TTS)
    return b"".join(speech_synthesis.synthesize(stack.client, TTS, caps, text, audio_format=contract.AUDIO_WAV))


def _transcribe_sides(stack: Stack, clip: bytes) -> dict:
    caps = stack.client.capabilities(STT)

    def core() -> dict:
        began = time.perf_counter()
        speech.transcribe(stack.client, STT, caps, clip)
        return {"seconds": time.perf_counter() - began}

    def plugin() -> dict:
        began = time.perf_counter()
        list(stack.invoke("invoke_speech2text", "speech2text", STT, file=clip.hex()))
        return {"seconds": time.perf_counter() - began}

    return {"core": core, "plugin": plugin}


def _synthesis_sides(stack: Stack, text: str) -> dict:
    caps = stack.client.capabilities(TTS)

    def core() -> dict:
        began, first, pieces = time.perf_counter(), None, []
        for piece in speech_synthesis.synthesize(stack.client, TTS, caps, text):  # MP3, as the plugin asks
            first = first or time.perf_counter()
            pieces.append(piece)
        ended = time.perf_counter()
        return {"seconds": ended - began, "first_s": (first or ended) - began, "audio_s": mp3_seconds(b"".join(pieces))}

    def plugin() -> dict:
        began, first, pieces = time.perf_counter(), None, []
        for message in stack.invoke("invoke_tts", "tts", TTS, content_text=text, voice="", tenant_id="bench"):
            first = first or message.at
            pieces.append(bytes.fromhex(message.data["result"]))
        ended = time.perf_counter()
        return {"seconds": ended - began, "first_s": (first or ended) - began, "audio_s": mp3_seconds(b"".join(pieces))}

    return {"core": core, "plugin": plugin}


def _summarise(runs: dict[str, list[dict]], audio_s: float | None) -> dict:
    result: dict[str, Any] = {}
    for side, samples in runs.items():
        seconds = audio_s or samples[0]["audio_s"]
        result[side] = {
            "ms": stats.summary([1000 * s["seconds"] for s in samples]),
            "rtf": stats.summary([s["seconds"] / (audio_s or s["audio_s"]) for s in samples]),
            "audio_s": seconds,
        }
        if "first_s" in samples[0]:
            result[side]["first_ms"] = stats.summary([1000 * s["first_s"] for s in samples])
    result["ratio"] = stats.ratio(result["plugin"]["ms"], result["core"]["ms"])
    return result


def run(stack: Stack, quick: bool) -> dict:
    rounds = 3 if quick else 5
    stack.progress.step("speaking the clips to transcribe")
    clips = {"short clip": _speak_wav(stack, SHORT)}
    if not quick:
        clips["long clip"] = _speak_wav(stack, " ".join(LONG_SENTENCES))
    result: dict[str, Any] = {"transcribe": {}, "speak": {}, "rounds": rounds}
    for name, clip in clips.items():
        stack.progress.step(f"transcribing the {name} ({wav_seconds(clip):.1f} s)")
        runs = stats.alternate(_transcribe_sides(stack, clip), rounds, on_round=stack.progress.rounds(name, rounds))
        result["transcribe"][name] = _summarise(runs, wav_seconds(clip))
    stack.progress.step("speaking three sentences")
    runs = stats.alternate(_synthesis_sides(stack, THREE), rounds, on_round=stack.progress.rounds("speak", rounds))
    result["speak"]["three sentences"] = _summarise(runs, None)
    return result


def render(result: dict, report: Report) -> None:
    report.paragraph(
        f"Real-time factor = processing time / audio duration (below 1 is faster than real time), median "
        f"(min–max) of {result['rounds']} rounds alternating core client and plugin. Whisper tiny.en "
        "(CTranslate2, int8) and Piper en_US-joe-medium (MP3 out, one piece per sentence) on the CPU."
    )
    rows = []
    for task, cases in (("speech to text", result["transcribe"]), ("text to speech", result["speak"])):
        for name, r in cases.items():
            first = stats.fmt(r["plugin"]["first_ms"], 0) if "first_ms" in r["plugin"] else "–"
            rows.append([
                task, f"{name} ({r['plugin']['audio_s']:.1f} s of audio)", stats.fmt(r["plugin"]["rtf"], 3),
                stats.fmt(r["core"]["rtf"], 3), stats.fmt(r["plugin"]["ms"], 0), stats.fmt(r["core"]["ms"], 0),
                first, f"{r['ratio']:.2f}",
            ])  # fmt: skip
    report.table(["task", "input", "RTF plugin", "RTF core", "plugin ms", "core ms", "plugin first audio ms",
                  "plugin / core"], rows)  # fmt: skip
