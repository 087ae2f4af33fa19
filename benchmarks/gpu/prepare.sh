#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from anywhere, before a session's device run:
#   bash benchmarks/gpu/prepare.sh
# The GPU machine has Python 3.12 with torch, numpy, onnx(runtime, CPU-only), prometheus-client,
# psutil, pillow, opencv and pytest, but none of the serving stack and no wrk, and it cannot download.
# This fetches what is missing into .whl/ (wheels for CPython 3.12) and .deb/ (Debian's wrk and its
# LuaJIT and OpenSSL), both git-ignored; benchmarks/gpu/run.sh installs them there. Versions are this venv's.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=.venv/bin/pip
[ -x "$PIP" ] || { echo "run 'make install' first: versions are read from .venv" >&2; exit 1; }

packages=(litserve fastapi starlette uvicorn httptools uvloop pydantic pydantic-core annotated-types
  typing-inspection opentelemetry-api pyzmq orjson python-multipart)
pins=()
for name in "${packages[@]}"; do
  version=$("$PIP" show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  pins+=("${name}${version:+==$version}")
done

rm -rf .whl .deb
mkdir -p .whl .deb
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
(cd .deb && apt-get download -q wrk libluajit2-5.1-2 libluajit2-5.1-common libssl3 >/dev/null 2>&1)

ls .whl .deb
du -sh .whl .deb data/t10k-images-idx3-ubyte 2>/dev/null || true
echo "carry: .whl .deb data/t10k-images-idx3-ubyte (the benchmarks and the GPU test need only the test images)"
