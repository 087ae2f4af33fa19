"""The real buildah, as root with chroot isolation: a Debian base image made here, and builds of
deploy/docker/Dockerfile that reach the host's package indexes. The image test uses it, and so does
`make image-cpu OFFLINE=1` / `make image-gpu OFFLINE=1` (``python -m tests.deploy.buildah``).

No container registry is reachable from these machines and no Docker daemon runs, so the base image
is made with `debootstrap`, and the package indexes (Debian mirror, PyPI mirrors, a TLS-inspecting
proxy's CA) are whatever this host is configured with, passed in as read-only mounts at build time:
nothing host-specific ends up in the Dockerfile or in an image layer.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SUITE = "bookworm"
# What python:3.11-slim-bookworm gives the Dockerfile: Python 3.11 with venv, and a CA bundle.
BASE_PACKAGES = ("python3.11", "python3-venv", "ca-certificates")
# Left out of the base, as Debian's slim images leave them out: the package cache and index, the mirror
# names of this host (the build gets the host's sources as mounts instead), documentation and locales.
BASE_REMOVALS = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "etc/apt/sources.list",
    "usr/share/doc/*/*",
    "usr/share/man/**/*",
    "usr/share/info/*",
    "usr/share/locale/**/*",
)
# The same paths kept out of packages installed later, as in debian:bookworm-slim.
SLIM_DPKG_CONFIG = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
"""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOT = Path(__file__).resolve().parents[2]


def unusable_reason() -> str | None:
    """Why images cannot be built and run here (None when they can)."""
    if os.geteuid() != 0:
        return "buildah --isolation chroot and debootstrap need root"
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed here (.ci/run installs it)"
    info = subprocess.run(["buildah", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"buildah is not usable here: {info.stderr.strip()[-300:]}"
    return None


def buildah(*args: str, timeout: float = 600, **kwargs: Any) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout.strip()


def image_exists(name: str) -> bool:
    return (
        subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True).returncode == 0
    )


def debian_mirror() -> str:
    """The Debian archive this host installs from (its apt sources), for debootstrap."""
    for source in [APT_SOURCES, *sorted(APT_SOURCE_PARTS.glob("*.sources"))]:
        if source.is_file():
            match = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", source.read_text(), re.MULTILINE)
            match = match or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", source.read_text(), re.M)
            if match:
                return match.group(1)
    return DEFAULT_MIRROR


def base_image() -> str:
    """A Debian bookworm image with Python 3.11, made with debootstrap (about a minute) and kept in
    buildah's storage under a name that changes with its recipe, so later runs on this machine reuse it."""
    mirror = debian_mirror()
    recipe = f"{SUITE} {mirror} {BASE_PACKAGES} {BASE_REMOVALS} {SLIM_DPKG_CONFIG}"
    name = f"localhost/mnist-serving-test-base:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(name):
        return name
    container = buildah("from", "scratch")
    try:
        root = buildah("mount", container)
        debootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, root, mirror],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if debootstrap.returncode != 0:
            raise RuntimeError(f"debootstrap from {mirror} failed:\n{debootstrap.stdout[-4000:]}")
        for pattern in BASE_REMOVALS:
            for path in Path(root).glob(pattern):
                if (path.is_file() or path.is_symlink()) and path.name != "copyright":
                    path.unlink()
        (Path(root) / "etc/dpkg/dpkg.cfg.d/slim").write_text(SLIM_DPKG_CONFIG)
        buildah(
            "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container
        )
        buildah("config", "--cmd", "python3", container)
        buildah("commit", "--quiet", container, name)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    for old in buildah("images", "--format", "{{.Name}}:{{.Tag}}").split():
        if old.startswith(f"{name.rsplit(':', 1)[0]}:") and old != name:  # a base of an earlier recipe
            subprocess.run(["buildah", "rmi", old], capture_output=True)
    return name


def build_image(
    base: str, variant: str, tag: str, labels: dict[str, str], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """`buildah build` of deploy/docker/Dockerfile from the repository root on ``base`` (Docker image
    format, which keeps the HEALTHCHECK), ``labels`` being the VERSION/REVISION/SOURCE build arguments."""
    command = ["nice", "-n", "10", "buildah", "build", "--isolation", "chroot", "--format", "docker"]
    for mount in package_index_mounts(workdir):
        command += ["--volume", mount]
    for name, value in {"BASE_IMAGE": base, "VARIANT": variant, **labels}.items():
        command += ["--build-arg", f"{name}={value}"]
    command += ["--file", str(ROOT / "deploy/docker/Dockerfile"), "--tag", tag, str(ROOT)]
    return subprocess.run(command, capture_output=True, text=True, timeout=3600)


def package_index_mounts(workdir: Path) -> list[str]:
    """`--volume` arguments that give the build's RUN steps this host's apt sources, its effective pip
    configuration (files and PIP_* variables, merged into one file), the local directories and
    certificates that configuration names, and the host's CA bundle (a TLS-inspecting proxy's CA)."""
    mounts = []
    apt_sources = [APT_SOURCES, *sorted(APT_SOURCE_PARTS.glob("*.list")), *APT_SOURCE_PARTS.glob("*.sources")]
    mounts += [f"{source}:{source}:ro" for source in apt_sources if source.is_file()]
    if HOST_CA_BUNDLE.is_file():
        mounts.append(f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro")
    pip_conf = workdir / "pip.conf"
    settings = effective_pip_settings()
    config = configparser.ConfigParser(interpolation=None)
    config["global"] = settings
    with pip_conf.open("w") as handle:
        config.write(handle)
    mounts.append(f"{pip_conf}:/etc/pip.conf:ro")
    for path in sorted(_local_paths(settings)):
        if path != HOST_CA_BUNDLE:
            mounts.append(f"{path}:{path}:ro")
    return mounts


def effective_pip_settings() -> dict[str, str]:
    """pip's `[global]` settings as pip here would see them: the config files in pip's order, then the
    PIP_* environment variables, which override them."""
    files = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"), Path.home() / ".pip/pip.conf"]
    files.append(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "pip/pip.conf")
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    settings: dict[str, str] = {}
    for file in files:
        parser = configparser.ConfigParser(interpolation=None)
        if file.is_file():
            parser.read(file)
            for section in ("global", "install"):
                if parser.has_section(section):
                    settings.update(parser[section])
    for variable, value in os.environ.items():
        if variable.startswith("PIP_") and variable != "PIP_CONFIG_FILE":
            settings[variable[4:].lower().replace("_", "-")] = value
    return settings


def _local_paths(settings: dict[str, str]) -> set[Path]:
    """Directories and files on this machine that the pip settings point at. A file:// index
    ``.../simple`` is mounted with its parent, where such mirrors keep the files its pages link to."""
    paths = set()
    for key in ("find-links", "index-url", "extra-index-url", "cert", "client-cert", "constraint"):
        for value in settings.get(key, "").split():
            local = Path(value.removeprefix("file://"))
            if value.startswith("file://") and local.name == "simple":
                local = local.parent
            if local.is_absolute() and local.exists():
                paths.add(local)
    return paths


def image_size(name: str) -> int:
    """Uncompressed size in bytes: the sum of the layers, which buildah stores as plain tar files."""
    manifest = json.loads(json.loads(buildah("inspect", "--type", "image", name))["Manifest"])
    assert all(layer["mediaType"].endswith(".tar") for layer in manifest["layers"]), manifest
    return sum(int(layer["size"]) for layer in manifest["layers"])


def image_config(name: str) -> dict[str, Any]:
    """The image's OCI configuration (Entrypoint, Cmd, Env, User, Labels...)."""
    inspected = json.loads(buildah("inspect", "--type", "image", name))
    return inspected["OCIv1"]["config"]  # type: ignore[no-any-return]


def image_healthcheck(name: str) -> list[str]:
    """The command of the image's HEALTHCHECK (Docker image format; OCI has no health checks)."""
    inspected = json.loads(buildah("inspect", "--type", "image", name))
    test = inspected["Docker"]["config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    return test[1:]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the image with buildah on a debootstrapped base.")
    parser.add_argument("--variant", choices=["cpu", "gpu"], required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument(
        "--build-arg", action="append", default=[], help="NAME=value (VERSION, REVISION, SOURCE)"
    )
    args = parser.parse_args()
    reason = unusable_reason()
    if reason:
        sys.exit(f"cannot build here: {reason}")
    labels = dict(arg.split("=", 1) for arg in args.build_arg)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        result = build_image(base_image(), args.variant, args.tag, labels, Path(workdir))
    if result.returncode != 0:
        sys.exit(
            f"{result.stdout[-6000:]}{result.stderr[-4000:]}\nbuildah build failed ({result.returncode})"
        )
    elapsed = time.monotonic() - started
    print(f"{args.tag}: {image_size(args.tag) / 1e6:.0f} MB uncompressed, built in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
