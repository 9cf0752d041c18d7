"""The core task modules on a fake Triton (tests/fake_triton.py): what each sends, how the
answers become chunks, results and errors. The same functions the plugin handlers call;
the handlers themselves need dify_plugin, which the test environment does not have."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests import media_fixtures as fx
from tests.fake_triton import (
    Router,
    ScriptedStreams,
    bytes_out,
    config,
    error,
    fake_client,
    fp32_out,
    infer_answer,
    infer_inputs,
    int32_out,
    stream_message,
)
from tritonmm import admin, chat, contract, diagnose, embedding, rerank, speech, speech_synthesis
from tritonmm.chat_wire import decode_messages
from tritonmm.contract import Capabilities, Feature, Task, Voice
from tritonmm.errors import ConnectionFailed, InvalidInput, ServerError, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, TextPart
from tritonmm.settings import MediaLimits, ServerSettings

CHAT = Capabilities(Task.CHAT, frozenset({Feature.VISION}), 4096, 2, "tiny")
WAV = speech.silence_wav()


def token(text: bytes):
    return stream_message({"TEXT": bytes_out(text)})


def final(reason: bytes = b"stop", prompt: int = 7, completion: int = 2, text: bytes = b""):
    outputs = {"FINISH_REASON": bytes_out(reason), "PROMPT_TOKENS": int32_out(prompt)}
    outputs |= {"COMPLETION_TOKENS": int32_out(completion), "TEXT": bytes_out(text)}
    return stream_message(outputs, final=True)


def hello() -> list[Message]:
    return [Message("user", (TextPart("Hi"),))]


# --- chat ---------------------------------------------------------------------------------------


def test_chat_streams_tokens_then_one_final_chunk_with_usage() -> None:
    streams = ScriptedStreams([token(b"Hel"), token(b"lo"), final(completion=2)])
    chunks = list(chat.open_chat(fake_client(streams=streams), "chat", hello(), chat.ChatParams(max_tokens=5), CHAT))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    assert (chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (7, 2)
    sent = streams.sent()
    assert decode_messages(sent["MESSAGES_JSON"][0])[0].parts[0].text == "Hi"
    assert json.loads(sent["PARAMS_JSON"][0]) == {"max_tokens": 5}


@pytest.mark.parametrize(
    "ending",
    [[], [stream_message(final=True)]],  # the stream just ends; a final flag without FINISH_REASON
    ids=["ends", "final-without-reason"],
)
def test_chat_stream_without_a_final_response_is_a_server_error(ending: list) -> None:
    streams = ScriptedStreams([token(b"Hel"), *ending])
    chunks = chat.open_chat(fake_client(streams=streams), "chat", hello(), chat.ChatParams(), CHAT)
    assert next(chunks).text == "Hel"
    with pytest.raises(ServerError, match="model 'chat' ended the stream without a final response"):
        next(chunks)
    assert streams.calls[0].cancelled


def test_chat_error_mid_stream_is_raised_as_ours_and_the_call_cancelled() -> None:
    streams = ScriptedStreams([token(b"a"), stream_message(error="invalid input: video 1: cannot decode video")])
    chunks = chat.open_chat(fake_client(streams=streams), "chat", hello(), chat.ChatParams(), CHAT)
    assert next(chunks).text == "a"
    with pytest.raises(InvalidInput, match="^video 1: cannot decode video$"):
        next(chunks)
    assert streams.calls[0].cancelled


def test_closing_the_chat_early_cancels_the_call() -> None:
    streams = ScriptedStreams([token(b"a"), token(b"b"), final()])
    chunks = chat.open_chat(fake_client(streams=streams), "chat", hello(), chat.ChatParams(), CHAT)
    next(chunks)
    chunks.close()  # what the LLM handler does when Dify stops reading
    assert streams.calls[0].cancelled


def test_chat_refusals_come_before_the_stream_opens() -> None:
    streams = ScriptedStreams()
    client = fake_client(streams=streams)
    video = MediaPart(Modality.VIDEO, base64_data=base64.b64encode(b"\0\0\0\x18ftypisom").decode())
    with pytest.raises(UnsupportedMedia, match="does not accept video input"):
        chat.open_chat(client, "chat", [Message("user", (video,))], chat.ChatParams(), CHAT)
    assert streams.requests == []


def test_chat_images_travel_as_raw_bytes_in_their_tensor() -> None:
    png = fx.png()
    streams = ScriptedStreams([final()])
    part = MediaPart(Modality.IMAGE, base64_data=base64.b64encode(png).decode())
    list(chat.open_chat(fake_client(streams=streams), "chat", [Message("user", (part,))], chat.ChatParams(), CHAT))
    assert streams.sent()["IMAGES"] == [png]


# --- the audio cascade --------------------------------------------------------------------------


def _asr_router(transcripts: list[bytes]) -> Router:
    router = Router().model("asr", config("speech_to_text"))
    pending = list(transcripts)

    def transcribe(request: httpx.Request) -> httpx.Response:
        assert infer_inputs(request)["AUDIO"] == [WAV]
        outputs = {"TEXT": bytes_out(pending.pop(0)), "SEGMENTS_JSON": bytes_out(b"[]")}
        return infer_answer(outputs | {"LANGUAGE": bytes_out(b"en"), "DURATION": fp32_out(0.5)})

    router.routes[("POST", "/v2/models/asr/infer")] = transcribe
    return router


def test_audio_parts_reach_a_cascade_model_as_numbered_transcripts() -> None:
    caps = Capabilities(Task.CHAT, frozenset(), 4096, 1, "tiny", asr_model="asr")
    streams = ScriptedStreams([final()])
    client = fake_client(_asr_router([b"first", b"second"]), streams)
    audio = MediaPart(Modality.AUDIO, data=WAV)
    messages = [Message("user", (audio,)), Message("user", (TextPart("and"), audio))]
    list(chat.open_chat(client, "chat", messages, chat.ChatParams(), caps))
    wire = decode_messages(streams.sent()["MESSAGES_JSON"][0])
    texts = [p.text for m in wire for p in m.parts]
    assert texts == ["[Transcript of audio 1]: first", "and", "[Transcript of audio 2]: second"]
    assert "AUDIOS" not in streams.sent()  # two audio parts, max_images 1: transcripts do not count


def test_audio_without_native_audio_or_speech_model_is_refused_by_name() -> None:
    audio = MediaPart(Modality.AUDIO, data=WAV)
    with pytest.raises(UnsupportedMedia, match="does not accept audio: .* names no speech model"):
        chat.build_inputs([Message("user", (audio,))], chat.ChatParams(), CHAT, fake_client(), "chat")


# --- text to speech ------------------------------------------------------------------------------

TTS = Capabilities(Task.TEXT_TO_SPEECH, frozenset(), 0, 1, "real", voices=(Voice("joe", "en-US"),))


def test_tts_pieces_are_cut_at_512_kib() -> None:
    big = bytes(range(256)) * (5 * 1024)  # 1.25 MiB in one response
    streams = ScriptedStreams(
        [stream_message({"AUDIO": bytes_out(big)}), stream_message({"AUDIO": bytes_out(b"tail")}, final=True)]
    )
    pieces = list(speech_synthesis.synthesize(fake_client(streams=streams), "tts", TTS, "Hello."))
    assert [len(p) for p in pieces] == [512 * 1024, 512 * 1024, len(big) - 1024 * 1024, 4]
    assert b"".join(pieces) == big + b"tail"
    assert streams.sent() == {"TEXT": [b"Hello."], "VOICE": [b"joe"], "FORMAT": [b"mp3"]}


def test_tts_stream_without_a_final_response_is_a_server_error() -> None:
    streams = ScriptedStreams([stream_message({"AUDIO": bytes_out(b"abc")})])
    with pytest.raises(ServerError, match="ended the stream without a final response"):
        list(speech_synthesis.synthesize(fake_client(streams=streams), "tts", TTS, "Hello."))


def test_tts_refuses_an_unknown_voice_before_sending() -> None:
    streams = ScriptedStreams()
    with pytest.raises(InvalidInput, match="model 'tts' has no voice 'amy'; its voices: joe"):
        speech_synthesis.synthesize(fake_client(streams=streams), "tts", TTS, "Hello.", voice="amy")
    assert streams.requests == []


# --- unary tasks -----------------------------------------------------------------------------------


def test_speech_answer_outside_the_contract_is_a_server_error() -> None:
    router = Router({("POST", "/v2/models/asr/infer"): infer_answer({"TEXT": bytes_out(b"hi")})})
    caps = Capabilities(Task.SPEECH_TO_TEXT, frozenset(), 0, 1, "real", languages=("en",))
    with pytest.raises(ServerError, match="answered outside the speech_to_text contract"):
        speech.transcribe(fake_client(router), "asr", caps, WAV)
    with pytest.raises(InvalidInput, match="does not transcribe language 'de'; it supports: en"):
        speech.transcribe(fake_client(router), "asr", caps, WAV, language="de")


def test_embeddings_go_in_batches_of_the_models_size_and_come_back_in_order() -> None:
    router = Router()
    batches: list[list[bytes]] = []

    def embed(request: httpx.Request) -> httpx.Response:
        texts = infer_inputs(request)["TEXT"]
        batches.append(texts)
        vectors = [v for t in texts for v in (float(len(t)), 1.0)]
        return infer_answer({"EMBEDDING": fp32_out(*vectors), "TOKENS": int32_out(*(len(t) for t in texts))})

    router.routes[("POST", "/v2/models/emb/infer")] = embed
    caps = Capabilities(Task.TEXT_EMBEDDING, frozenset(), 512, 1, "real", max_batch_size=2)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    result = embedding.embed_texts(fake_client(router), "emb", caps, texts, contract.INPUT_TYPE_QUERY)
    assert batches == [[b"a", b"bb"], [b"ccc", b"dddd"], [b"eeeee"]]
    assert [v[0] for v in result.vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert result.tokens == [1, 2, 3, 4, 5]


def test_rerank_sorts_thresholds_and_cuts() -> None:
    scores = {b"good": 0.9, b"ok": 0.5, b"bad": 0.1}

    def score(request: httpx.Request) -> httpx.Response:
        return infer_answer({"SCORE": fp32_out(*(scores[d] for d in infer_inputs(request)["DOCUMENT"]))})

    router = Router({("POST", "/v2/models/rr/infer"): score})
    caps = Capabilities(Task.RERANK, frozenset(), 512, 1, "real", max_batch_size=8)
    ranked = rerank.rerank(fake_client(router), "rr", caps, "q", ["bad", "good", "ok"], score_threshold=0.2, top_n=1)
    assert [(r.index, r.text) for r in ranked] == [(1, "good")]


# --- validation steps and administration ---------------------------------------------------------


def _server(index: list[dict]) -> Router:
    return Router(
        {
            ("GET", "/v2/health/live"): httpx.Response(200),
            ("GET", "/v2/health/ready"): httpx.Response(200),
            ("POST", "/v2/repository/index"): httpx.Response(200, json=index),
        }
    )


def test_validation_names_the_failing_step() -> None:
    down = Router({("GET", "/v2/health/live"): httpx.ConnectError("refused")})
    with pytest.raises(diagnose.CheckFailed, match="step 1/5 'server reachable'"):
        diagnose.check_model(fake_client(down), "chat", Task.CHAT, lambda caps: None)
    router = _server([{"name": "chat", "state": "UNAVAILABLE", "reason": "out of memory"}])
    router.routes[("GET", "/v2/models/chat/ready")] = httpx.Response(400)
    with pytest.raises(diagnose.CheckFailed, match="step 3/5 'model present'.*models on this server: chat"):
        diagnose.check_model(fake_client(router), "nope", Task.CHAT, lambda caps: None)
    with pytest.raises(diagnose.CheckFailed, match="step 4/5 'model loaded'.*state UNAVAILABLE: out of memory"):
        diagnose.check_model(fake_client(router), "chat", Task.CHAT, lambda caps: None)


def test_validation_probe_failure_is_step_5_and_success_returns_fresh_capabilities() -> None:
    router = _server([{"name": "chat", "state": "READY"}]).model("chat", config("chat", **{"tmm.features": "vision"}))

    def failing_probe(caps: Capabilities) -> None:
        raise ServerError("no tokens")

    with pytest.raises(diagnose.CheckFailed, match="step 5/5 'probe request' failed: no tokens"):
        diagnose.check_model(fake_client(router), "chat", Task.CHAT, failing_probe)
    probed: list[Capabilities] = []
    caps = diagnose.check_model(fake_client(router), "chat", Task.CHAT, probed.append)
    assert probed == [caps] and caps.features == {Feature.VISION}


def test_admin_statistics_control_and_metrics() -> None:
    stats = {
        "model_stats": [
            {
                "name": "ocr",
                "version": "1",
                "execution_count": 3,
                "inference_count": 4,
                "inference_stats": {"success": {"count": 4, "ns": 8_000_000}, "cache_hit": {"count": 1}},
            }
        ]
    }
    router = _server([{"name": "ocr", "version": "1", "state": "READY"}])
    router.routes[("GET", "/v2/models/stats")] = httpx.Response(200, json=stats)
    router.routes[("POST", "/v2/repository/models/ocr/load")] = httpx.Response(200, json={})
    router.routes[("POST", "/v2/repository/models/gone/unload")] = error(
        400, "explicit model load / unload is not allowed"
    )
    metrics = 'nv_inference_count{model="ocr",version="1"} 4\nnv_other 9\nnv_gpu_utilization 0.5\n'
    router.routes[("GET", "/metrics")] = httpx.Response(200, text=metrics)
    client = fake_client(router)
    [entry] = admin.statistics(client)
    assert (entry["model"], entry["requests"], entry["cache_hits"], entry["mean_request_ms"]) == ("ocr", 4, 1, 2.0)
    assert admin.control(client, "reload", "ocr").state == "READY"
    with pytest.raises(InvalidInput, match="unload of model 'gone' failed: .*not allowed"):
        admin.control(client, "unload", "gone")
    with pytest.raises(InvalidInput, match="action must be load, unload or reload"):
        admin.control(client, "delete", "ocr")
    summary = admin.metrics_summary(client, admin.metrics_url(client.settings))
    assert summary == {"nv_inference_count": {"model=ocr,version=1": 4.0}, "nv_gpu_utilization": {"total": 0.5}}
    assert admin.health(client) == {"server": "http://triton.test:8000", "live": True, "ready": True}


# --- media loaders --------------------------------------------------------------------------------


def test_one_cap_table_for_every_kind() -> None:
    limits = MediaLimits(image_max_bytes=10, video_max_bytes=20, audio_max_bytes=30, document_max_bytes=40)
    assert [limits.max_bytes(m) for m in Modality] == [10, 20, 30, 40]
    with pytest.raises(ValueError, match="unknown media kind 'pdf'"):
        limits.max_bytes("pdf")


@pytest.mark.parametrize("modality", list(Modality))
def test_a_tool_file_over_its_kinds_cap_is_refused_before_download(modality: Modality) -> None:
    settings = ServerSettings.from_credentials({"server_url": "http://triton.test:8000"})
    cap = settings.media.max_bytes(modality)
    # The URL is never fetched: nothing listens on port 1.
    with pytest.raises(InvalidInput, match=f"the file is {cap + 1} bytes, above the {cap}-byte cap for {modality}"):
        loader_for(modality).download("http://127.0.0.1:1/f", settings, declared_size=cap + 1)


def test_loaders_read_bytes_base64_and_refuse_an_empty_part() -> None:
    settings = ServerSettings.from_credentials({"server_url": "http://triton.test:8000"})
    png = fx.png()
    image = loader_for(Modality.IMAGE)
    assert image.load(MediaPart(Modality.IMAGE, data=png), "image 1", settings) == png
    assert image.load(MediaPart(Modality.IMAGE, base64_data=base64.b64encode(png).decode()), "image 1", settings) == png
    with pytest.raises(InvalidInput, match="image 2 has neither base64_data nor url"):
        image.load(MediaPart(Modality.IMAGE), "image 2", settings)
    with pytest.raises(UnsupportedMedia, match="audio 1 is not audio"):
        loader_for(Modality.AUDIO).load(MediaPart(Modality.AUDIO, data=png), "audio 1", settings)


def test_a_media_url_in_a_chat_is_fetched_under_the_url_policy() -> None:
    part = MediaPart(Modality.IMAGE, url="http://127.0.0.1:1/cat.png")
    with pytest.raises(InvalidInput, match="image 1: refused to fetch .* loopback"):
        chat.build_inputs([Message("user", (part,))], chat.ChatParams(), CHAT, fake_client(), "chat")
    open_policy = fake_client(allow_private_urls="true")
    with pytest.raises(ConnectionFailed, match="image 1: cannot fetch http://127.0.0.1:1/cat.png"):
        chat.build_inputs([Message("user", (part,))], chat.ChatParams(), CHAT, open_policy, "chat")
