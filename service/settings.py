"""Server settings: every one is a flag and an environment variable, documented by its effect.

Precedence: flag > environment variable (``MNIST_<NAME>``) > default. Built once in ``main()``
and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "MNIST_"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _count_or_auto(text: str) -> int:
    """A positive count, or "auto" (stored as 0: decided from the usable CPUs at start-up)."""
    return 0 if text.strip().lower() == "auto" else _positive_int(text)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    model_repository: Path = Path("models")
    model_name: str = "mnist"
    model_version: str = "latest"
    backend: str = "onnx"
    device: str = "auto"
    max_batch_size: int = 64
    batch_timeout: float = 0.0
    workers: int = 1
    api_servers: int = 0  # 0: auto (service.server.api_server_count)
    max_request_bytes: int = 8 * 1024 * 1024
    max_buffered_body_bytes: int = 256 * 1024 * 1024
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_images_per_request: int = 256
    max_image_pixels: int = 25_000_000
    decode_timeout: float = 5.0
    queue_limit: int = 1024
    request_timeout: float = 30.0
    drain_timeout: float = 20.0
    api_key: str | None = None
    low_confidence: float = 0.5
    poll_interval: float = 0.0
    metrics_dir: Path | None = None
    demo: bool = True
    log_level: str = "info"
    access_log: bool = False


# name -> (parser, help). The help says what changing the setting does to the running service.
HELP: dict[str, tuple[Callable[[str], Any], str]] = {
    "host": (str, "interface to listen on: 0.0.0.0 (all IPv4), 127.0.0.1 (this machine only) or :: (all)"),
    "port": (int, "TCP port for HTTP (predict, v2, health, metrics); 1024..65535"),
    "model_repository": (Path, "folder holding <name>/<version>/ model folders"),
    "model_name": (str, "which model in the repository to serve"),
    "model_version": (str, "version number to serve, or 'latest' (highest number with a metadata.json)"),
    "backend": (str, "onnx (ONNX Runtime) or torchscript (PyTorch); both give the same answers"),
    "device": (
        str,
        "auto (CUDA when usable, else CPU), cpu, cuda or cuda:N; cuda refuses to start without a GPU",
    ),
    "max_batch_size": (_positive_int, "most requests one inference call combines; larger = more throughput"),
    "batch_timeout": (
        _non_negative_float,
        "seconds a worker waits for more jobs before computing a batch; 0 computes at once and batches "
        "whatever arrived meanwhile (batches grow with load)",
    ),
    "workers": (_positive_int, "inference worker processes per device; each holds one copy of the model"),
    "api_servers": (
        _count_or_auto,
        "HTTP front-end processes that decode, validate and encode; auto: one per CPU this process may "
        "use (affinity and cgroup CPU limit), at most 8",
    ),
    "max_request_bytes": (_positive_int, "larger request bodies get 413 before they are read"),
    "max_buffered_body_bytes": (
        _positive_int,
        "bytes of request bodies an API server holds while they arrive, all connections together; the "
        "body that would pass it gets 503 and its connection is closed",
    ),
    "max_url_bytes": (_positive_int, "longer request targets (path and query) get 414"),
    "max_header_bytes": (
        _positive_int,
        "a request line and headers larger than this get 431, refused before they are complete",
    ),
    "max_headers": (_positive_int, "requests with more header fields get 431"),
    "header_timeout": (
        _positive_float,
        "seconds a client has from a request's first byte to the end of its headers; then 408, closed",
    ),
    "body_timeout": (
        _positive_float,
        "seconds a client has from the end of a request's headers to the end of its body; then 408, closed",
    ),
    "keep_alive_timeout": (
        _positive_float,
        "seconds an idle connection stays open after it was accepted or last answered; only the next "
        "request's first byte resets it",
    ),
    "max_images_per_request": (_positive_int, "requests carrying more images get 413"),
    "max_image_pixels": (
        _positive_int,
        "images larger than this (width x height) get 413: stops decompression bombs",
    ),
    "decode_timeout": (
        _positive_float,
        "seconds a request's images may take to decode; then 413 (a 25-megapixel photo takes well under 1 s)",
    ),
    "queue_limit": (
        _positive_int,
        "requests admitted at once across all API servers; beyond it 503 + Retry-After",
    ),
    "request_timeout": (_non_negative_float, "seconds a request may wait for its answer before 504"),
    "drain_timeout": (
        _non_negative_float,
        "seconds SIGTERM/SIGINT waits for in-flight requests before exiting",
    ),
    "api_key": (str, "if set, predict/infer routes need header X-API-Key (health and metrics stay open)"),
    "poll_interval": (
        _non_negative_float,
        "with --model-version latest: seconds between checks for a newer version, which is verified and "
        "swapped in without downtime (a bad one is refused); 0 = never",
    ),
    "low_confidence": (
        _non_negative_float,
        "predictions below this confidence count as low-confidence (drift signal)",
    ),
    "metrics_dir": (
        Path,
        "Prometheus multiprocess folder (emptied at start); default: a fresh temporary folder",
    ),
    "demo": (
        _bool,
        "serve the demo page at / (draw or upload a digit; it calls /predict, with the API key if set)",
    ),
    "log_level": (str, "debug, info, warning or error"),
    "access_log": (_bool, "log one line per request (off by default: it costs CPU at thousands of req/s)"),
}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-serve",
        description="Serve an MNIST model from the repository over HTTP: POST /predict, the Open Inference "
        "Protocol v2 (/v2/...), health and Prometheus /metrics. Every flag can also be set by the "
        "environment variable shown; flags win.",
    )
    defaults = Settings()
    for spec in fields(Settings):
        parse, text = HELP[spec.name]
        env = env_name(spec.name)
        default = getattr(defaults, spec.name)
        if env in environ:
            try:
                default = parse(environ[env])
            except (ValueError, argparse.ArgumentTypeError) as error:
                parser.error(f"environment variable {env}={environ[env]!r}: {error}")
        shown = "(set, hidden)" if spec.name == "api_key" and default else default
        if parse is _count_or_auto and default == 0:
            shown = "auto"
        parser.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            type=parse,
            default=default,
            metavar=spec.name.upper() if parse is not _bool else "BOOL",
            help=f"{text} [env {env}; default: {shown}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    args = build_parser(os.environ if environ is None else environ).parse_args(argv)
    settings = Settings(**vars(args))
    if settings.api_key == "":
        settings = Settings(**{**vars(args), "api_key": None})
    return settings
