"""The container image, checked statically: no Docker engine runs on these machines."""

from __future__ import annotations

import re

from service.settings import Settings, build_parser

from ..integration.harness import RunningServer
from .conftest import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "docker" / "Dockerfile").read_text()


def _instructions(keyword: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    return [
        line.split(None, 1)[1].strip() for line in text.splitlines() if line.upper().startswith(keyword + " ")
    ]


def test_bases_are_pinned_and_stages_are_multi() -> None:
    (default_base,) = [
        arg.split("=", 1)[1] for arg in _instructions("ARG") if arg.startswith("PYTHON_IMAGE=")
    ]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", default_base), default_base
    stages = _instructions("FROM")
    assert len(stages) >= 2 and all("latest" not in stage for stage in stages)
    assert any("COPY --from=build" in line for line in DOCKERFILE.splitlines())


def test_runs_as_a_non_root_user() -> None:
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in ("0", "root")


def test_no_secrets_are_baked_in() -> None:
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"(API_KEY|PASSWORD|SECRET|TOKEN)\s*=\s*\S", line, re.IGNORECASE), line


def test_port_entrypoint_and_env_match_the_server(server: RunningServer) -> None:
    (exposed,) = _instructions("EXPOSE")
    assert int(exposed) == Settings().port
    assert _instructions("ENTRYPOINT") == ['["mnist-serve"]']
    (cmd,) = _instructions("CMD")
    build_parser({}).parse_args(re.findall(r'"([^"]+)"', cmd))  # the default flags are real flags
    env = " ".join(_instructions("ENV"))
    names = set(re.findall(r"\b(MNIST_[A-Z_]+)=", env))
    known = {f"MNIST_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert names and names <= known
    assert "MNIST_PORT=8000" in env and "MNIST_METRICS_DIR=/tmp/" in env
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = _instructions("HEALTHCHECK")
    path = re.search(r"127\.0\.0\.1:8000(/[\w/]+)", healthcheck).group(1)
    assert server.request("GET", path).status == 200


def test_default_model_is_baked_in_with_an_override_mount_point() -> None:
    assert any(line.startswith("--chown=10001:10001 models /models") for line in _instructions("COPY"))
    assert "MNIST_MODEL_REPOSITORY=/models" in " ".join(_instructions("ENV"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "data" in ignored and "models" not in ignored
