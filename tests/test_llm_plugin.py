"""The LLM through the built package, driven as the daemon drives it, against a
real tritonserver serving tiny Idefics3 and LLaVA builds."""

from __future__ import annotations

import base64
import http.server
import threading

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests import media_fixtures as fx
from tests.conftest import VIDEO_MAX_FRAMES
from tritonmm_server.ops.network import free_ports
from tritonmm_server.ops.server import TritonServer

ARCHS = ["chat", "chat_llava"]


def image_part(data: bytes, mime: str = "image/png") -> dict:
    return {
        "type": "image",
        "format": mime.split("/")[1],
        "mime_type": mime,
        "base64_data": base64.b64encode(data).decode(),
    }


def video_part(data: bytes) -> dict:
    return {"type": "video", "format": "mp4", "mime_type": "video/mp4", "base64_data": base64.b64encode(data).decode()}


def user(*parts: dict, text: str = "What is in this picture?") -> list[dict]:
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": [{"type": "text", "data": text}, *parts]},
    ]


def invoke(
    plugin: PluginProcess,
    credentials: dict,
    messages: list[dict],
    *,
    model: str = "chat",
    stream: bool = True,
    **params,
) -> list[dict]:
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials,
        "prompt_messages": messages, "model_parameters": {"max_tokens": 12, "temperature": 0.8, **params},
        "tools": [], "stop": params.pop("stop", []), "stream": stream,
    }  # fmt: skip
    data["model_parameters"].pop("stop", None)
    return plugin.call("model", "invoke_llm", data)


def text_of(chunks: list[dict]) -> str:
    return "".join(c["delta"]["message"]["content"] for c in chunks)


def final(chunks: list[dict]) -> dict:
    return chunks[-1]["delta"]


def assert_streamed(chunks: list[dict]) -> None:
    """One chunk per generated token, then a last chunk with usage and finish_reason."""
    last = final(chunks)
    assert last["finish_reason"] in ("stop", "length")
    usage = last["usage"]
    assert len(chunks) == usage["completion_tokens"] + 1
    assert all(c["delta"]["usage"] is None and c["delta"]["finish_reason"] is None for c in chunks[:-1])
    assert [c["delta"]["index"] for c in chunks] == list(range(len(chunks)))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("model", ARCHS)
def test_stream_one_image(plugin: PluginProcess, credentials: dict, model: str) -> None:
    text_only = final(invoke(plugin, credentials, user(), model=model, max_tokens=1))["usage"]["prompt_tokens"]
    chunks = invoke(plugin, credentials, user(image_part(fx.png())), model=model)
    assert_streamed(chunks)
    assert final(chunks)["usage"]["completion_tokens"] >= 1
    # the server counts the image tokens into the prompt
    assert final(chunks)["usage"]["prompt_tokens"] > text_only


@pytest.mark.parametrize("model", ARCHS)
def test_stream_two_images(plugin: PluginProcess, credentials: dict, model: str) -> None:
    one = final(invoke(plugin, credentials, user(image_part(fx.png())), model=model, max_tokens=1))["usage"]
    chunks = invoke(
        plugin, credentials, user(image_part(fx.png()), image_part(fx.jpeg(80, 60), "image/jpeg")), model=model
    )
    assert_streamed(chunks)
    assert final(chunks)["usage"]["prompt_tokens"] > one["prompt_tokens"]


@pytest.mark.parametrize("model", ARCHS)
def test_stream_video(plugin: PluginProcess, credentials: dict, model: str) -> None:
    one_image = final(invoke(plugin, credentials, user(image_part(fx.png(64, 64))), model=model, max_tokens=1))["usage"]
    chunks = invoke(plugin, credentials, user(video_part(fx.mp4(seconds=4.0)), text="What happens?"), model=model)
    assert_streamed(chunks)
    # 4 s at 2 fps would be 8 frames; tmm.video_max_frames caps it at 4 frames,
    # each costing about one image's tokens.
    prompt = final(chunks)["usage"]["prompt_tokens"]
    assert prompt > 2 * one_image["prompt_tokens"]
    assert prompt < (VIDEO_MAX_FRAMES + 2) * one_image["prompt_tokens"]


def test_blocking_call_returns_whole_answer_in_one_chunk(plugin: PluginProcess, credentials: dict) -> None:
    messages = user(image_part(fx.png()))
    streamed = invoke(plugin, credentials, messages, seed=7)
    blocking = invoke(plugin, credentials, messages, seed=7, stream=False)
    assert len(blocking) == 1
    assert blocking[0]["delta"]["message"]["content"] == text_of(streamed)
    assert blocking[0]["delta"]["usage"]["completion_tokens"] == final(streamed)["usage"]["completion_tokens"]


def test_parameters_reach_the_model(plugin: PluginProcess, credentials: dict) -> None:
    messages = user(image_part(fx.png()))
    full = invoke(plugin, credentials, messages, seed=11, max_tokens=20)
    again = invoke(plugin, credentials, messages, seed=11, max_tokens=20)
    assert text_of(full) == text_of(again)  # seed
    assert final(full)["usage"]["completion_tokens"] > 3  # this seed answers at length, so a cap of 3 must cut it
    short = invoke(plugin, credentials, messages, seed=11, max_tokens=3)
    assert final(short)["usage"]["completion_tokens"] == 3  # max_tokens
    assert final(short)["finish_reason"] == "length"
    assert text_of(full).startswith(text_of(short))  # the same seed: the same first tokens
    greedy = {text_of(invoke(plugin, credentials, messages, seed=s, temperature=0.0)) for s in (1, 2, 3)}
    assert len(greedy) == 1  # temperature 0 ignores the seed


def test_stop_sequence_cuts_the_answer(plugin: PluginProcess, credentials: dict) -> None:
    messages = user(image_part(fx.png()))
    full = text_of(invoke(plugin, credentials, messages, seed=5, max_tokens=24))
    # the first two visible characters in a row from the middle on: whitespace alone is not a stop word
    pairs = [full[i : i + 2] for i in range(len(full) // 2, len(full) - 1)]
    visible = [pair for pair in pairs if not any(c.isspace() for c in pair)]
    assert visible, f"no stop word to pick in {full!r}"
    stop = visible[0]
    cut = full.index(stop)  # its first appearance, maybe before the middle
    chunks = invoke(plugin, credentials, messages, seed=5, max_tokens=24, stop=[stop])
    assert text_of(chunks) == full[:cut]
    assert final(chunks)["finish_reason"] == "stop"


def sent_images(chunks: list[dict]) -> list[tuple[int, int]]:
    """The (width, height) of each image the echo fixture received."""
    sizes = text_of(chunks).partition(" IMAGES=")[2].partition(" ")[0]
    return [tuple(int(n) for n in size.split("x")) for size in sizes.split(",") if size]


def test_large_photo_is_downscaled_and_answered(plugin: PluginProcess, credentials: dict) -> None:
    photo = image_part(fx.jpeg(9000, 6700), "image/jpeg")  # 60 megapixels
    capped = {**credentials, "image_max_side": "1024"}
    # what reaches the server: the longest side at the cap, the aspect ratio kept
    [(width, height)] = sent_images(invoke(plugin, capped, user({**photo, "detail": "high"}), model="echo_chat"))
    assert (width, height) == (1024, pytest.approx(1024 * 6700 / 9000, abs=1))
    # Dify's default detail is "low": the smaller low-detail side applies
    [low] = sent_images(invoke(plugin, capped, user(photo), model="echo_chat"))
    assert max(low) < 1024
    assert_streamed(invoke(plugin, capped, user(photo)))


def test_image_by_url(plugin: PluginProcess, credentials: dict) -> None:
    body = fx.png()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
        part = {"type": "image", "format": "png", "mime_type": "image/png", "url": url}
        assert_streamed(invoke(plugin, {**credentials, "allow_private_urls": "true"}, user(part)))
        with pytest.raises(PluginError) as raised:  # the same loopback URL, private networks not allowed
            invoke(plugin, credentials, user(part))
        assert raised.value.error_type == "InvokeBadRequestError" and "loopback" in raised.value.message
    finally:
        server.shutdown()


def test_unreachable_private_url_is_a_connection_error(plugin: PluginProcess, credentials: dict) -> None:
    part = {
        "type": "image",
        "format": "png",
        "mime_type": "image/png",
        "url": f"http://127.0.0.1:{free_ports(1)[0]}/x.png",
    }
    with pytest.raises(PluginError) as raised:
        invoke(plugin, {**credentials, "allow_private_urls": "true"}, user(part))
    assert raised.value.error_type == "InvokeConnectionError" and "cannot fetch" in raised.value.message


BAD_INPUTS = {
    "corrupt image": (lambda: user(image_part(fx.png()[:60] + b"\0garbage" * 40)), "InvokeBadRequestError", "corrupt image/png"),
    "unsupported type": (lambda: user(image_part(b"%PDF-1.7 pretending", "image/png")), "InvokeBadRequestError", "unsupported or unrecognised"),
    "decompression bomb": (lambda: user(image_part(fx.bomb_png())), "InvokeBadRequestError", "decompression bomb"),
    "video as image": (lambda: user(image_part(fx.mp4(seconds=1.0))), "InvokeBadRequestError", "content is video/mp4"),
    "undecodable video": (lambda: user(video_part(b"\0\0\0\x18ftypisom" + b"\x07junk" * 64)), "InvokeBadRequestError", "video 1"),
    "audio that is not audio": (lambda: user({"type": "audio", "format": "wav", "mime_type": "audio/wav", "base64_data": "UklGRg=="}), "InvokeBadRequestError", "audio 1 is not audio"),
    "loopback url": (lambda: user({"type": "image", "format": "png", "mime_type": "image/png", "url": f"http://127.0.0.1:{free_ports(1)[0]}/x.png"}), "InvokeBadRequestError", "loopback address"),
    "metadata url": (lambda: user({"type": "image", "format": "png", "mime_type": "image/png", "url": "http://169.254.169.254/latest/meta-data/"}), "InvokeBadRequestError", "cloud metadata address"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_and_plugin_keeps_serving(plugin: PluginProcess, credentials: dict, case: str) -> None:
    make, error_type, fragment = BAD_INPUTS[case]
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, make())
    assert raised.value.error_type == error_type
    assert fragment in raised.value.message
    assert plugin.alive()
    assert_streamed(invoke(plugin, credentials, user(image_part(fx.png()))))


def test_unknown_model(plugin: PluginProcess, credentials: dict) -> None:
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, user(), model="no_such_model")
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "unknown model" in raised.value.message
    assert_streamed(invoke(plugin, credentials, user()))


def test_error_mid_stream_is_mapped(plugin: PluginProcess, credentials: dict) -> None:
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": "midstream", "credentials": credentials,
        "prompt_messages": user(), "model_parameters": {}, "tools": [], "stop": [], "stream": True,
    }  # fmt: skip
    received: list[str] = []
    with pytest.raises(PluginError) as raised:
        for message in plugin.stream("model", "invoke_llm", data):
            received.append(message.data["delta"]["message"]["content"])
    assert received == ["a", "b"]
    assert raised.value.error_type == "InvokeServerUnavailableError"
    assert "fails after two tokens" in raised.value.message


def test_read_timeout_between_tokens(plugin: PluginProcess, credentials: dict) -> None:
    creds = {**credentials, "read_timeout": "1"}
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": "stalls", "credentials": creds,
        "prompt_messages": user(), "model_parameters": {}, "tools": [], "stop": [], "stream": True,
    }  # fmt: skip
    received = []
    with pytest.raises(PluginError) as raised:
        for message in plugin.stream("model", "invoke_llm", data):
            received.append(message.data["delta"]["message"]["content"])
    assert received == ["a"]
    assert raised.value.error_type == "InvokeConnectionError"
    assert "sent nothing for 1 s (read timeout)" in raised.value.message
    assert_streamed(invoke(plugin, credentials, user()))


def test_num_tokens_counted_by_the_server(plugin: PluginProcess, credentials: dict) -> None:
    messages = user(image_part(fx.png()))
    data = {
        "provider": "triton_multimodal",
        "model_type": "llm",
        "model": "chat",
        "credentials": credentials,
        "prompt_messages": messages,
        "tools": [],
    }
    [answer] = plugin.call("model", "get_llm_num_tokens", data)
    assert answer["num_tokens"] == final(invoke(plugin, credentials, messages, max_tokens=1))["usage"]["prompt_tokens"]


def test_server_stopped(plugin: PluginProcess, tmp_path) -> None:
    from tests.conftest import WORK

    spare = TritonServer(
        WORK / "repository", models=["refuses"], log_path=tmp_path / "spare.log", exit_timeout_s=2
    ).start()
    creds = {"server_url": spare.http_url, "grpc_endpoint": spare.grpc_url, "connect_timeout": "2"}
    spare.stop()
    with pytest.raises(PluginError) as raised:
        invoke(plugin, creds, user(), model="refuses")
    assert raised.value.error_type == "InvokeConnectionError"
    assert spare.http_url.removeprefix("http://") in raised.value.message
    assert plugin.alive()


def test_tokens_arrive_as_generated(plugin: PluginProcess, credentials: dict) -> None:
    """Chunks are separate protocol messages, received one after another."""
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": "chat", "credentials": credentials,
        "prompt_messages": user(image_part(fx.png())), "model_parameters": {"max_tokens": 30, "temperature": 0.8},
        "tools": [], "stop": [], "stream": True,
    }  # fmt: skip
    arrivals = [m.at for m in plugin.stream("model", "invoke_llm", data)]
    assert len(arrivals) >= 2
    assert arrivals == sorted(arrivals) and arrivals[-1] > arrivals[0]


def test_concurrent_streams_do_not_mix(plugin: PluginProcess, credentials: dict) -> None:
    """Four sessions at once in one plugin process: each answer equals its sequential twin."""
    messages = user(image_part(fx.png()))
    seeds = [21, 22, 23, 24]
    expected = {s: text_of(invoke(plugin, credentials, messages, seed=s, max_tokens=16)) for s in seeds}
    results: dict[int, str] = {}

    def run(seed: int) -> None:
        results[seed] = text_of(invoke(plugin, credentials, messages, seed=seed, max_tokens=16))

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == expected
    assert len(set(expected.values())) > 1  # the seeds really differ
