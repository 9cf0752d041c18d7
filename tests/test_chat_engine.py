"""The chat engine on tiny random-init checkpoints of each supported architecture."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tritonmm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.conversation import VIDEO_MARKER
from tritonmm_server.engines.chat.engine import ChatEngine
from tritonmm_server.engines.chat.params import GenerationParams, parse_params
from tritonmm_server.engines.chat.token_stream import Generation, TokenText
from tritonmm_server.media.video import sample_video_frames
from tritonmm_server.tiny.build import ARCHS, AUDIO_ARCHS, FEATURES

MAX_IMAGES = 4
VIDEO_FPS = 1.0
VIDEO_MAX_FRAMES = 8


@pytest.fixture(scope="session")
def model_dirs(tiny_model: Callable[[str], Path]) -> dict[str, Path]:
    return {arch: tiny_model(arch) for arch in (*ARCHS, *AUDIO_ARCHS)}


@pytest.fixture(scope="session", params=ARCHS)
def engine(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> ChatEngine:
    return ChatEngine(
        model_dirs[request.param],
        video_max_frames=VIDEO_MAX_FRAMES,
        video_fps=VIDEO_FPS,
        max_images=MAX_IMAGES,
        num_threads=2,
    )


# --- helpers -------------------------------------------------------------------


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (120, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def video(seconds: int = 3, fps: int = 10, fmt: str = "mp4", codec: str = "libx264", gop: int | None = None) -> bytes:
    """A 64x64 clip whose frame i is uniformly grey at level 8*i, so a frame tells its own time."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 8 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


def user(*parts: dict | str) -> str:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return json.dumps([{"role": "user", "content": content}])


IMAGE_0 = {"type": "image", "index": 0}
IMAGE_1 = {"type": "image", "index": 1}
VIDEO_0 = {"type": "video", "index": 0}


def run(
    engine: ChatEngine, messages: str, params: dict, images=(), videos=(), audios=(), **kw
) -> tuple[list[str], Generation]:
    prepared = engine.prepare(messages, list(images), list(videos), list(audios))
    generation = engine.generate(prepared, parse_params(json.dumps(params)), **kw)
    return list(generation), generation


# --- media and token counting ----------------------------------------------------


def test_image_question_streams_tokens_and_counts_image_tokens(engine: ChatEngine) -> None:
    text_only = engine.prepare(user("What is in the picture?"), [], [])
    with_image = engine.prepare(user(IMAGE_0, "What is in the picture?"), [png()], [])
    assert with_image.image_count == 1
    # Each tiny arch spends 16 placeholder tokens on an image.
    assert with_image.prompt_tokens >= text_only.prompt_tokens + 16

    generation = engine.generate(with_image, GenerationParams(max_tokens=8, seed=3))
    tokens = list(generation)
    assert tokens and all(isinstance(t, str) for t in tokens)
    assert len(tokens) == generation.completion_tokens <= 8
    assert generation.prompt_tokens == with_image.prompt_tokens
    assert generation.finish_reason == (FINISH_LENGTH if len(tokens) == 8 else FINISH_STOP)


def test_two_images(engine: ChatEngine) -> None:
    one = engine.prepare(user(IMAGE_0, "Compare."), [png(), png((0, 0, 255))], [])
    two = engine.prepare(user(IMAGE_0, IMAGE_1, "Compare."), [png(), png((0, 0, 255))], [])
    assert (one.image_count, two.image_count) == (1, 2)
    assert two.prompt_tokens >= one.prompt_tokens + 16
    tokens, generation = run(engine, user(IMAGE_0, IMAGE_1, "Compare."), {"max_tokens": 4}, [png(), png()])
    assert len(tokens) == generation.completion_tokens >= 1


def test_video_is_sampled_into_frames(engine: ChatEngine) -> None:
    prepared = engine.prepare(user(VIDEO_0, "What happens?"), [], [video(seconds=3)])
    # 3 s at 1 frame per second: 3 frames, under the 8-frame cap.
    assert prepared.video_frames == {0: 3}
    assert prepared.image_count == 3
    text = engine.tokenizer.decode(prepared.inputs["input_ids"][0])
    assert VIDEO_MARKER in text
    tokens, generation = run(engine, user(VIDEO_0, "What happens?"), {"max_tokens": 3}, videos=[video()])
    assert len(tokens) == generation.completion_tokens >= 1


@pytest.mark.parametrize(("max_frames", "fps", "expected"), [(8, 1.0, 3), (2, 1.0, 2), (8, 2.0, 6), (8, 30.0, 8)])
def test_video_frame_sampling_limits(max_frames: int, fps: float, expected: int) -> None:
    frames = sample_video_frames(video(seconds=3, fps=10), max_frames=max_frames, fps=fps)
    assert len(frames) == expected
    assert all(f.mode == "RGB" and f.size == (64, 64) for f in frames)


@pytest.mark.parametrize(
    ("fmt", "codec", "gop"),
    [
        ("mp4", "libx264", None),
        ("mp4", "mpeg4", 5),
        ("webm", "libvpx", None),
        ("matroska", "libx264", 4),
        ("avi", "mpeg4", None),
        ("mpegts", "libx264", 6),  # seeks land past their target: the in-order fallback
    ],
)
def test_video_frames_are_evenly_spaced(fmt: str, codec: str, gop: int | None) -> None:
    frames = sample_video_frames(video(seconds=3, fps=10, fmt=fmt, codec=codec, gop=gop), max_frames=8, fps=1.0)
    # Centres of three 1 s slices: frames 5, 15 and 25, grey levels 40, 120 and 200.
    levels = [float(np.asarray(f).mean()) for f in frames]
    assert levels == pytest.approx([40, 120, 200], abs=10)


# --- generation control -----------------------------------------------------------


def test_max_tokens(engine: ChatEngine) -> None:
    tokens, generation = run(engine, user(IMAGE_0, "Describe."), {"max_tokens": 5, "seed": 1}, [png()])
    assert len(tokens) == generation.completion_tokens <= 5
    assert generation.finish_reason == (FINISH_LENGTH if len(tokens) == 5 else FINISH_STOP)


def test_max_tokens_zero_counts_the_prompt_only(engine: ChatEngine) -> None:
    tokens, generation = run(engine, user(IMAGE_0, "Describe."), {"max_tokens": 0}, [png()])
    assert tokens == []
    assert generation.completion_tokens == 0
    assert generation.prompt_tokens > 16
    assert generation.finish_reason == FINISH_LENGTH


def test_seed_makes_sampling_reproducible(engine: ChatEngine) -> None:
    def text(seed: int) -> str:
        tokens, _ = run(
            engine, user(IMAGE_0, "Describe."), {"max_tokens": 16, "temperature": 1.0, "seed": seed}, [png()]
        )
        return "".join(tokens)

    first = text(7)
    assert first == text(7)
    assert first != text(8)


def test_stop_sequence_ends_generation_before_it(engine: ChatEngine) -> None:
    params = {"max_tokens": 40, "temperature": 1.0, "seed": 11}
    tokens, _ = run(engine, user("Tell me a story."), params)
    text = "".join(tokens)
    # A 3-character piece from the middle that does not occur earlier.
    start = next(i for i in range(len(text) // 3, len(text) - 3) if text.find(text[i : i + 3]) == i)
    stop = text[start : start + 3]

    stopped, generation = run(engine, user("Tell me a story."), {**params, "stop": [stop]})
    assert "".join(stopped) == text[:start]
    assert generation.finish_reason == FINISH_STOP
    assert generation.completion_tokens == len(stopped) < len(tokens)


def test_cancellation_stops_within_one_token(engine: ChatEngine) -> None:
    polls = 0

    def is_cancelled() -> bool:
        nonlocal polls
        polls += 1
        return polls >= 2  # polled after each token: flips once 2 tokens exist

    tokens, generation = run(
        engine, user("Go on."), {"max_tokens": 50, "temperature": 1.0, "seed": 5}, is_cancelled=is_cancelled
    )
    assert generation.finish_reason == FINISH_CANCELLED
    assert len(tokens) == generation.completion_tokens <= 3


# --- per-token text -------------------------------------------------------------------


def ids(engine: ChatEngine, text: str) -> list[int]:
    return engine.tokenizer.encode(text, add_special_tokens=False)


def push_all(text: TokenText, token_ids: list[int]) -> list[str]:
    """Feed tokens as the generation loop does: none after the one that finished it."""
    pieces = []
    for token_id in token_ids:
        pieces.append(text.push(token_id))
        if text.finish_reason is not None:
            break
    return pieces


def test_token_text_holds_incomplete_characters(engine: ChatEngine) -> None:
    euro = ids(engine, "€")  # 3 bytes, not in the tiny BPE's merges: one token per byte
    assert len(euro) == 3
    text = TokenText(engine.tokenizer, engine.eos_token_ids, stop=(), max_new=10)
    assert push_all(text, euro) == ["", "", "€"]
    assert text.finish_reason is None


def test_token_text_flushes_a_held_stop_prefix_when_generation_ends(engine: ChatEngine) -> None:
    tokens = ids(engine, "say ab")
    at_length = TokenText(engine.tokenizer, engine.eos_token_ids, stop=("abc",), max_new=len(tokens))
    pieces = push_all(at_length, tokens)
    assert "".join(pieces) == "say ab" and "ab" in pieces[-1]
    assert at_length.finish_reason == FINISH_LENGTH

    at_eos = TokenText(engine.tokenizer, engine.eos_token_ids, stop=("abc",), max_new=100)
    pieces = push_all(at_eos, [*tokens, engine.tokenizer.eos_token_id])
    assert "".join(pieces) == "say ab" and pieces[-1].endswith("b")
    assert at_eos.finish_reason == FINISH_STOP


def test_token_text_stops_at_the_earliest_stop_sequence(engine: ChatEngine) -> None:
    tokens = ids(engine, "hello")
    assert engine.tokenizer.decode(tokens[:1]) == "he"  # both stop sequences sit in the first token
    text = TokenText(engine.tokenizer, engine.eos_token_ids, stop=("e", "h"), max_new=100)
    assert push_all(text, tokens) == [""]
    assert text.finish_reason == FINISH_STOP


def test_errors_inside_generation_reach_the_consumer(engine: ChatEngine) -> None:
    polls = 0

    def broken() -> bool:
        nonlocal polls
        polls += 1
        if polls > 1:  # the first poll happens before the worker starts; fail inside it
            raise RuntimeError("cancellation check failed")
        return False

    prepared = engine.prepare(user("Hi"), [], [])
    generation = iter(engine.generate(prepared, GenerationParams(max_tokens=5), broken))
    with pytest.raises(RuntimeError, match="cancellation check failed"):
        list(generation)


def test_control_tokens_in_text_stay_text(engine: ChatEngine) -> None:
    eos = engine.tokenizer.eos_token
    prepared = engine.prepare(user(f"What does <image> mean? {eos}"), [], [])
    ids = prepared.inputs["input_ids"][0].tolist()
    assert prepared.image_count == 0
    assert engine.tokenizer.convert_tokens_to_ids("<image>") not in ids
    assert ids.count(engine.tokenizer.eos_token_id) <= 1  # the template's own end of turn at most


# --- bad requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "images", "videos", "message"),
    [
        (user(IMAGE_0, "Hi"), [b"\x89PNG but not really"], [], "image 1: not an image file PIL can read"),
        (user(IMAGE_0, "Hi"), [png()[:60]], [], "image 1: cannot decode the image"),
        (user(IMAGE_0, IMAGE_1, "Hi"), [png(), png()[:60]], [], "image 2: cannot decode the image"),
        (user(VIDEO_0, "Hi"), [], [b"this is not a video" * 20], "video 1: cannot decode video"),
        (user(IMAGE_1, "Hi"), [png()], [], r"image 2 is missing: the request carries 1 image\(s\)"),
        (user(VIDEO_0, "Hi"), [], [], r"video 1 is missing: the request carries 0 video\(s\)"),
        (
            user(*[IMAGE_0] * (MAX_IMAGES + 1)),
            [png()],
            [],
            rf"{MAX_IMAGES + 1} image parts in one request; model '[\w-]+' takes at most {MAX_IMAGES} of each media",
        ),
        (user({"type": "sound", "index": 0}), [], [], "message 1 part 1: unknown part type 'sound'"),
        (user("Hi", {"type": "audio"}), [], [], "message 1 part 2: a part of type 'audio' needs an integer 'index'"),
        (json.dumps([{"role": "robot", "content": "Hi"}]), [], [], "message 1: role must be one of"),
        ("not json", [], [], "MESSAGES_JSON is not valid JSON"),
        ("[]", [], [], "MESSAGES_JSON must be a non-empty JSON list"),
    ],
)
def test_bad_requests_are_input_errors(
    engine: ChatEngine, messages: str, images: list[bytes], videos: list[bytes], message: str
) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        engine.prepare(messages, images, videos)


def test_audio_only_container_has_no_video_stream() -> None:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(ValueError, match=r"^no video stream$"):
        sample_video_frames(buf.getvalue(), max_frames=8, fps=1.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"temperature": "hot"}', "temperature must be a number >= 0, got 'hot'"),
        ('{"temperature": -0.5}', "temperature must be a number >= 0, got -0.5"),
        ('{"max_tokens": 2.5}', "max_tokens must be an integer >= 0, got 2.5"),
        ('{"max_tokens": true}', "max_tokens must be an integer >= 0, got True"),
        ('{"top_p": 0}', r"top_p must be a number in \(0, 1\], got 0"),
        ('{"top_k": -1}', "top_k must be an integer >= 0"),
        ('{"stop": [""]}', "stop must be a non-empty string or a list of them"),
        ('{"seed": -1}', r"seed must be an integer in \[0, 2\*\*64\), got -1"),
        ('{"frequency_penalty": 1}', "unknown parameter 'frequency_penalty'"),
        ("[1]", "PARAMS_JSON must be a JSON object, got list"),
        ("{", "PARAMS_JSON is not valid JSON"),
    ],
)
def test_bad_params_are_input_errors(raw: str, message: str) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        parse_params(raw)


def test_params_defaults_and_normalisation() -> None:
    assert parse_params(None) == parse_params("") == parse_params("{}") == GenerationParams()
    params = parse_params('{"max_tokens": 0, "temperature": 0, "stop": "END", "seed": 3, "top_p": null}')
    assert params == GenerationParams(max_tokens=0, temperature=0.0, stop=("END",), seed=3)


def test_the_cap_counts_each_media_kind_on_its_own(engine: ChatEngine) -> None:
    """tmm.max_images caps images, videos and audio clips separately: a full quota of each passes."""
    parts = [IMAGE_0] * MAX_IMAGES + [VIDEO_0] * MAX_IMAGES
    prepared = engine.prepare(user(*parts, "Compare."), [png()], [video(seconds=1)])
    assert prepared.video_frames == {0: 1}  # decoded once, however many parts refer to it
    assert prepared.image_count == 2 * MAX_IMAGES


# --- native audio (the tiny Qwen2-Audio) ----------------------------------------------------

AUDIO_0 = {"type": "audio", "index": 0}
AUDIO_1 = {"type": "audio", "index": 1}
AUDIO_TOKENS_PER_SECOND = 25  # Qwen2-Audio: 100 mel frames per second, halved twice by the encoder


@pytest.fixture(scope="session")
def audio_engine(model_dirs: dict[str, Path]) -> ChatEngine:
    assert FEATURES["qwen2-audio"] == "audio"  # what a config serving it must declare
    return ChatEngine(
        model_dirs["qwen2-audio"],
        video_max_frames=VIDEO_MAX_FRAMES,
        video_fps=VIDEO_FPS,
        max_images=MAX_IMAGES,
        num_threads=2,
        native_audio=True,
    )


def wav(seconds: float, rate: int = 44_100, channels: int = 2) -> bytes:
    """A 440 Hz tone under light noise, 16-bit PCM: not at the model's 16 kHz, and stereo, so decoding resamples."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    noise = np.random.default_rng(0).normal(0.0, 0.05, n)
    mono = np.clip(0.4 * np.sin(2 * np.pi * 440 * t) + noise, -1, 1)
    pcm = (np.repeat(mono[:, None], channels, axis=1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def test_audio_question_streams_tokens_and_counts_audio_tokens(audio_engine: ChatEngine) -> None:
    text_only = audio_engine.prepare(user("What is this sound?"), [], [])
    with_audio = audio_engine.prepare(user(AUDIO_0, "What is this sound?"), [], [], [wav(2.0)])
    assert with_audio.audio_seconds == {0: pytest.approx(2.0, abs=0.01)}
    assert with_audio.image_count == 0
    assert "input_features" in with_audio.inputs
    # 2 s of sound is 50 placeholder tokens, plus the "Audio 1: <|audio_bos|>...<|audio_eos|>" wrapper.
    assert with_audio.prompt_tokens >= text_only.prompt_tokens + 2 * AUDIO_TOKENS_PER_SECOND

    generation = audio_engine.generate(with_audio, GenerationParams(max_tokens=8, seed=3))
    tokens = list(generation)
    assert tokens and all(isinstance(t, str) for t in tokens)
    assert len(tokens) == generation.completion_tokens <= 8
    assert generation.prompt_tokens == with_audio.prompt_tokens
    assert generation.finish_reason == (FINISH_LENGTH if len(tokens) == 8 else FINISH_STOP)


def test_prompt_tokens_grow_with_audio_length(audio_engine: ChatEngine) -> None:
    def prompt_tokens(seconds: float) -> int:
        return audio_engine.prepare(user(AUDIO_0, "Transcribe."), [], [], [wav(seconds)]).prompt_tokens

    one, three, ten = prompt_tokens(1.0), prompt_tokens(3.0), prompt_tokens(10.0)
    assert three - one == pytest.approx(2 * AUDIO_TOKENS_PER_SECOND, abs=1)
    assert ten - one == pytest.approx(9 * AUDIO_TOKENS_PER_SECOND, abs=1)


def test_two_audios_each_get_their_own_tokens(audio_engine: ChatEngine) -> None:
    clips = [wav(1.0), wav(2.0, rate=16_000, channels=1)]
    one = audio_engine.prepare(user(AUDIO_0, "Compare."), [], [], clips)
    two = audio_engine.prepare(user(AUDIO_0, AUDIO_1, "Compare."), [], [], clips)
    assert two.audio_seconds == {0: pytest.approx(1.0, abs=0.01), 1: pytest.approx(2.0, abs=0.01)}
    assert two.prompt_tokens >= one.prompt_tokens + 2 * AUDIO_TOKENS_PER_SECOND
    text = audio_engine.tokenizer.decode(two.inputs["input_ids"][0])
    assert "Audio 1:" in text and "Audio 2:" in text
    tokens, generation = run(audio_engine, user(AUDIO_0, AUDIO_1, "Compare."), {"max_tokens": 4}, audios=clips)
    assert len(tokens) == generation.completion_tokens >= 1


def test_audio_model_answers_text_only_and_keeps_control_tokens_as_text(audio_engine: ChatEngine) -> None:
    tokens, _ = run(audio_engine, user("Hello"), {"max_tokens": 3})
    assert tokens
    prepared = audio_engine.prepare(user("What is <|AUDIO|>?"), [], [])
    assert audio_engine.tokenizer.convert_tokens_to_ids("<|AUDIO|>") not in prepared.inputs["input_ids"][0].tolist()
    assert prepared.audio_seconds == {}


def test_audio_warm_up_hears_audio(audio_engine: ChatEngine) -> None:
    audio_engine.warm_up()  # runs the audio encoder on a second of silence
    assert audio_engine.native_audio and audio_engine.max_audio_seconds == 30


@pytest.mark.parametrize(
    ("messages", "audios", "images", "message"),
    [
        (user(AUDIO_1, "Hi"), [wav(1.0)], [], r"audio 2 is missing: the request carries 1 audio\(s\)"),
        (user(AUDIO_0, "Hi"), [], [], r"audio 1 is missing: the request carries 0 audio\(s\)"),
        (user(AUDIO_0, "Hi"), [b"this is not audio" * 50], [], "audio 1: cannot decode audio"),
        (user(AUDIO_0, "Hi"), [b""], [], r"audio 1: the audio is empty \(0 bytes\)"),
        (user(AUDIO_0, "Hi"), [png()], [], "audio 1: the file has no audio stream|audio 1: cannot decode audio"),
        (user(AUDIO_0, "Hi"), [wav(0.0)], [], "audio 1: the audio stream holds no samples"),
        (user(AUDIO_0, "Hi"), [wav(0.05)], [], "audio 1 is 50 ms long; this model needs at least 100 ms"),
        (user(AUDIO_0, "Hi"), [wav(31.0)], [], "audio 1 is longer than 30 s, the most this model hears in one clip"),
        (user(AUDIO_0, AUDIO_1, "Hi"), [wav(1.0), wav(0.05)], [], "audio 2 is 50 ms long"),
        (
            user(*[AUDIO_0] * (MAX_IMAGES + 1)),
            [wav(1.0)],
            [],
            rf"{MAX_IMAGES + 1} audio parts in one request; model 'qwen2-audio' takes at most {MAX_IMAGES} of each",
        ),
        (user(IMAGE_0, "Hi"), [], [png()], r"model qwen2-audio does not take image input \(qwen2_audio has no image"),
        (user(VIDEO_0, "Hi"), [], [], "model qwen2-audio does not take video input"),
    ],
)
def test_bad_audio_requests_are_input_errors(
    audio_engine: ChatEngine, messages: str, audios: list[bytes], images: list[bytes], message: str
) -> None:
    with pytest.raises(InputError, match=f"^({message})"):
        audio_engine.prepare(messages, images, [], audios)


def video_with_sound(seconds: int = 2) -> bytes:
    """An mp4 with a 64x64 H.264 picture and a 440 Hz AAC sound track."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        picture = container.add_stream("libx264", rate=10)
        picture.width = picture.height = 64
        picture.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=16_000, layout="mono")
        for i in range(seconds * 10):
            container.mux(picture.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 8 * i, np.uint8))))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(seconds * 16_000) / 16_000)).astype(np.float32)
        for start in range(0, tone.size, 1024):  # AAC's frame size
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = 16_000
            container.mux(sound.encode(chunk))
        container.mux(picture.encode())
        container.mux(sound.encode())
    return buf.getvalue()


def test_a_video_file_sent_as_audio_is_heard_by_its_sound_track(audio_engine: ChatEngine) -> None:
    prepared = audio_engine.prepare(user(AUDIO_0, "What do you hear?"), [], [], [video_with_sound(seconds=2)])
    assert prepared.audio_seconds == {0: pytest.approx(2.0, abs=0.2)}  # AAC adds priming samples
    with pytest.raises(InputError, match="^audio 1: the file has no audio stream"):
        audio_engine.prepare(user(AUDIO_0, "Hi"), [], [], [video()])


def test_vision_model_refuses_audio_it_cannot_hear(engine: ChatEngine) -> None:
    with pytest.raises(InputError, match=rf"^model {engine.name} does not take audio natively \(.* no audio encoder\)"):
        engine.prepare(user(AUDIO_0, "What is this sound?"), [], [], [wav(1.0)])


def test_audio_model_without_the_audio_feature_refuses_audio(model_dirs: dict[str, Path]) -> None:
    engine = ChatEngine(model_dirs["qwen2-audio"], video_max_frames=8, video_fps=1.0, max_images=4, native_audio=False)
    with pytest.raises(InputError, match=r"^model qwen2-audio does not take audio natively \(its tmm.features"):
        engine.prepare(user(AUDIO_0, "Hi"), [], [], [wav(1.0)])
    assert engine.prepare(user("Hi"), [], []).prompt_tokens > 0  # text still works


def test_audio_feature_on_a_checkpoint_without_audio_fails_to_load(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="lists 'audio', but checkpoint idefics3 .* has no audio processor"):
        ChatEngine(model_dirs["idefics3"], video_max_frames=8, video_fps=1.0, max_images=4, native_audio=True)
