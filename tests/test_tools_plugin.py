"""The workflow tools through their built package, against the real tritonserver: every
tool and every output kind, and the file guard (Dify's files URL only, no loopback tricks)."""

from __future__ import annotations

import io
import re

import av
import pytest
from PIL import Image

from devtools.files_server import FilesServer, dify_file
from devtools.plugin_harness import PluginError, PluginProcess
from tests import media_fixtures as fx
from tests.audio_fixtures import encode as encode_audio
from tests.audio_fixtures import speech, word_error_rate
from tests.conftest import WORK
from tests.text_images import LINES, three_lines
from tests.text_images import encode as encode_image
from tests.tool_runs import PROVIDER, run_tool
from tritonmm_server.ops.network import free_ports
from tritonmm_server.ops.server import TritonServer

SENTENCE = "The quick brown fox jumps over the lazy dog. Offline speech synthesis works on this machine."


@pytest.fixture(scope="module")
def creds(credentials: dict) -> dict:
    return {**credentials, "read_timeout": "300"}


def test_credentials_are_validated_step_by_step(tools_plugin: PluginProcess, creds: dict) -> None:
    data = {"provider": PROVIDER, "credentials": creds}
    [answer] = tools_plugin.call("tool", "validate_tool_credentials", data)
    assert answer["result"] is True
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(PluginError) as raised:
        tools_plugin.call("tool", "validate_tool_credentials", {**data, "credentials": {"server_url": url}})
    assert raised.value.error_type == "ToolProviderCredentialValidationError"
    assert "step 1/5 'server reachable'" in raised.value.message


def test_ocr_reads_the_rendered_text_exactly(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer
) -> None:
    image = files_server.add("scan.png", encode_image(three_lines()), "image/png")
    run = run_tool(tools_plugin, creds, "ocr", {"images": [image], "draw_boxes": True})
    assert run.text.splitlines() == LINES
    assert run.variables["text"] == run.text
    [result] = run.jsons[0]["images"]
    assert [line["text"] for line in result["lines"]] == LINES
    assert all(len(line["box"]) == 4 and 0 < line["score"] <= 1 for line in result["lines"])
    with Image.open(io.BytesIO(run.blob("scan_ocr.png"))) as boxed:
        assert boxed.size == three_lines().size


def test_transcribe_gives_text_segments_and_subtitles(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer
) -> None:
    samples, rate = speech(SENTENCE)
    audio = files_server.add("meeting.mp3", encode_audio(samples, rate, "mp3"), "audio/mpeg")
    run = run_tool(tools_plugin, creds, "transcribe", {"file": audio, "language": "en"})
    assert word_error_rate(SENTENCE, run.text) <= 0.10, run.text
    assert run.variables["language"] == "en"
    duration = samples.size / rate
    assert run.variables["duration"] == pytest.approx(duration, abs=0.3)
    segments = run.jsons[0]["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["end"] > s["start"] for s in segments)
    srt = run.blob("meeting.srt").decode()
    times = [_seconds(t) for t in re.findall(r"(\d\d:\d\d:\d\d,\d\d\d)", srt)]
    assert times == sorted(times) and times[-1] >= duration - 1.5  # monotonic and covering the audio
    assert run.blob("meeting.vtt").decode().startswith("WEBVTT\n\n")


def _seconds(clock: str) -> float:
    hours, minutes, rest = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_speak_returns_an_audio_file(tools_plugin: PluginProcess, creds: dict, fmt: str) -> None:
    run = run_tool(tools_plugin, creds, "speak", {"text": "Hello from the workflow. This is a test.", "format": fmt})
    [(meta, audio)] = run.blobs
    assert meta["mime_type"] == {"mp3": "audio/mpeg", "wav": "audio/wav"}[fmt]
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(stream)) / stream.rate
    assert 1.0 < seconds < 8.0
    assert run.variables["voice"] == "en_US-joe-medium"


def test_ask_image_streams_its_answer(tools_plugin: PluginProcess, creds: dict, files_server: FilesServer) -> None:
    image = files_server.add("photo.png", fx.png(), "image/png")
    run = run_tool(tools_plugin, creds, "ask_image", {"images": [image], "question": "What is this?", "max_tokens": 8})
    pieces = run.streamed["answer"]
    assert len(pieces) >= 2 and "".join(pieces) == run.text  # token by token, then the whole


def test_image_text_match_scores_labels_and_draws_a_heat_map(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer
) -> None:
    image = files_server.add("thing.png", fx.png(160, 120), "image/png")
    run = run_tool(tools_plugin, creds, "image_text_match", {"image": image, "texts": "a cat, a dog, a red circle"})
    scores = run.jsons[0]["scores"]
    assert sorted(s["label"] for s in scores) == ["a cat", "a dog", "a red circle"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-4)
    assert run.variables["best_label"] == scores[0]["label"] == run.jsons[0]["best"]
    with Image.open(io.BytesIO(run.blob("heatmap.png"))) as heat:
        assert heat.format == "PNG" and heat.size == (160, 120)


def test_video_keyframes_with_captions(tools_plugin: PluginProcess, creds: dict, files_server: FilesServer) -> None:
    video = files_server.add("clip.mp4", fx.mp4_gop(seconds=4.0, fps=10, gop=10), "video/mp4")
    run = run_tool(
        tools_plugin, creds, "video_keyframes", {"video": video, "mode": "keyframes", "count": 8, "caption": True}
    )
    frames = run.jsons[0]["frames"]
    assert [f["timestamp"] for f in frames] == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.01)
    assert run.variables["count"] == 4 and len(run.blobs) == 4
    assert all(isinstance(f["caption"], str) for f in frames)
    for meta, jpeg in run.blobs:
        assert meta["mime_type"] == "image/jpeg" and jpeg.startswith(b"\xff\xd8")
    uniform = run_tool(tools_plugin, creds, "video_keyframes", {"video": video, "mode": "uniform", "count": 6})
    stamps = [f["timestamp"] for f in uniform.jsons[0]["frames"]]
    assert len(stamps) == 6 and stamps == sorted(stamps) and stamps[-1] < 4.0


def test_ask_video_streams_its_answer(tools_plugin: PluginProcess, creds: dict, files_server: FilesServer) -> None:
    video = files_server.add("walk.mp4", fx.mp4(seconds=2.0), "video/mp4")
    run = run_tool(tools_plugin, creds, "ask_video", {"video": video, "question": "What happens?", "max_tokens": 6})
    assert len(run.streamed["answer"]) >= 2 and "".join(run.streamed["answer"]) == run.text


def test_admin_reports_and_controls_only_when_allowed(
    tools_plugin: PluginProcess, creds: dict, triton: TritonServer, files_server: FilesServer
) -> None:
    _still_serving(tools_plugin, creds, files_server)  # at least one OCR request for the statistics
    health = run_tool(tools_plugin, creds, "triton_admin", {"action": "health"}).jsons[0]["result"]
    assert (
        health["live"]
        and health["ready"]
        and any(m["name"] == "ocr" and m["state"] == "READY" for m in health["models"])
    )
    stats = run_tool(tools_plugin, creds, "triton_admin", {"action": "statistics", "model": "ocr"}).jsons[0]["result"]
    assert stats[0]["model"] == "ocr" and stats[0]["requests"] >= 1
    metrics = run_tool(
        tools_plugin, {**creds, "metrics_url": triton.metrics_url}, "triton_admin", {"action": "metrics"}
    )
    assert "nv_inference_request_success" in metrics.jsons[0]["result"]
    with pytest.raises(PluginError) as raised:
        run_tool(tools_plugin, creds, "triton_admin", {"action": "unload", "model": "midstream"})
    assert "Allow model load, unload and reload" in raised.value.message
    allowed = {**creds, "allow_admin": True}
    unloaded = run_tool(tools_plugin, allowed, "triton_admin", {"action": "unload", "model": "midstream"})
    assert unloaded.jsons[0]["result"]["state"] != "READY"
    loaded = run_tool(tools_plugin, allowed, "triton_admin", {"action": "load", "model": "midstream"})
    assert loaded.jsons[0]["result"]["state"] == "READY"


# --- bad files: each a clear tool error, and the plugin keeps serving ---------------------------


@pytest.fixture(scope="module")
def forbidden() -> FilesServer:
    """A second local server playing the forbidden target: it must never be asked anything."""
    server = FilesServer()
    server.add("x.png", fx.png(), "image/png")
    yield server
    server.close()


def _loopback_urls(port: int) -> dict[str, str]:
    return {
        "another port": f"http://127.0.0.1:{port}/files/x.png",
        "localhost": f"http://localhost:{port}/files/x.png",
        "127.1": f"http://127.1:{port}/files/x.png",
        "[::1]": f"http://[::1]:{port}/files/x.png",
        "0x7f000001": f"http://0x7f000001:{port}/files/x.png",
    }


@pytest.mark.parametrize("name", list(_loopback_urls(1)))
def test_loopback_urls_are_refused_before_any_request(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer, forbidden: FilesServer, name: str
) -> None:
    url = _loopback_urls(int(forbidden.base_url.rsplit(":", 1)[1]))[name]
    with pytest.raises(PluginError) as raised:
        run_tool(tools_plugin, creds, "ocr", {"images": [dify_file(url, "x.png", "image/png", 100)]})
    assert "refused" in raised.value.message or "loopback" in raised.value.message, raised.value.message
    assert forbidden.requests == []
    _still_serving(tools_plugin, creds, files_server)


BAD_FILES = {
    "wrong type": (
        lambda s: s.add("fake.png", b"%PDF-1.7 not an image at all" * 10, "image/png"),
        "unrecognised content (declared image/png)",
    ),
    "oversize": (lambda s: {**s.add("big.png", fx.png(), "image/png"), "size": 500 * 1024 * 1024}, "cap"),
    "expired": (lambda s: (s.expired.add("old.png"), s.add("old.png", fx.png(), "image/png"))[1], "403"),
    "missing": (lambda s: dify_file(s.url("nope.png"), "nope.png", "image/png", 10), "404"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_get_a_clear_error(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer, case: str
) -> None:
    make, fragment = BAD_FILES[case]
    with pytest.raises(PluginError) as raised:
        run_tool(tools_plugin, creds, "ocr", {"images": [make(files_server)]})
    assert fragment in raised.value.message, raised.value.message
    assert "sign=" not in raised.value.message  # signed URLs stay out of messages
    _still_serving(tools_plugin, creds, files_server)


def test_unreachable_files_url_is_a_connection_error(
    tools_plugin: PluginProcess, creds: dict, files_server: FilesServer
) -> None:
    base = f"http://127.0.0.1:{free_ports(1)[0]}"
    image = dify_file(f"{base}/files/a.png?sign=x", "a.png", "image/png", 10)
    with pytest.raises(PluginError) as raised:
        run_tool(tools_plugin, {**creds, "files_url": base}, "ocr", {"images": [image]})
    assert raised.value.error_type == "ConnectionFailed" and "cannot" in raised.value.message
    _still_serving(tools_plugin, creds, files_server)


def test_audio_tool_refuses_an_image(tools_plugin: PluginProcess, creds: dict, files_server: FilesServer) -> None:
    picture = files_server.add("voice.wav", fx.png(), "audio/wav")
    with pytest.raises(PluginError) as raised:
        run_tool(tools_plugin, creds, "transcribe", {"file": picture})
    assert "is not audio" in raised.value.message


def _still_serving(plugin: PluginProcess, creds: dict, files_server: FilesServer) -> None:
    assert plugin.alive()
    image = files_server.add("ok.png", encode_image(three_lines()), "image/png")
    assert run_tool(plugin, creds, "ocr", {"images": [image]}).text.splitlines() == LINES


def test_api_key_header_opens_triton_restricted_apis(
    tools_plugin: PluginProcess, triton: TritonServer, tmp_path
) -> None:
    # Triton's own API-key mechanism: the statistics API answers only with the header.
    restricted = ["--http-restricted-api=statistics:x-api-key=s3cret"]
    server = TritonServer(WORK / "repository", models=["echo_bytes"], log_path=tmp_path / "restricted.log",
                          exit_timeout_s=2, extra_args=restricted)  # fmt: skip
    with server:
        creds = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
        parameters = {"action": "statistics", "model": "echo_bytes"}
        with pytest.raises(PluginError) as raised:
            run_tool(tools_plugin, creds, "triton_admin", parameters)
        assert raised.value.error_type == "Unauthorized" and "expecting header 'x-api-key'" in raised.value.message
        keyed = {**creds, "api_key": "s3cret", "api_key_header": "X-API-Key"}
        stats = run_tool(tools_plugin, keyed, "triton_admin", parameters).jsons[0]["result"]
        assert stats[0]["model"] == "echo_bytes"
