# The two commands of the README, and the pieces they are made of.
# The virtual environment is built from pyproject.toml alone, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: serve test check lint typecheck unit train-default image-cpu image-gpu clean

# Container images (deploy/README.md): `make image-cpu`, `make image-gpu`, with docker by default
# (CONTAINER=podman works the same). OFFLINE=1 builds with buildah on a Debian base made here with
# debootstrap and this host's package indexes, as the image test does, where no registry is reachable.
CONTAINER ?= docker
IMAGE ?= mnist-serving
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REVISION := $(shell git rev-parse HEAD 2>/dev/null)
# Any user:token@ in the remote's URL stays out of the image's labels.
SOURCE := $(shell git remote get-url origin 2>/dev/null | sed 's|//[^/@]*@|//|')
IMAGE_BUILD_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) --build-arg SOURCE=$(SOURCE)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/mnist-serve --port $(PORT)

# The exact command that produced the default model, models/mnist/2 (publishes the next version into models/).
train-default: $(BIN)/.installed
	$(BIN)/mnist-train --arch cnn-small --seed 0

test: lint typecheck unit

# The edit loop: lint, types and every test that starts no server and trains nothing (about 2 minutes).
check: lint typecheck
	$(BIN)/pytest -m "not starts_server and not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest

image-cpu image-gpu: image-%:
ifeq ($(OFFLINE),1)
	$(PYTHON) -m tests.deploy.buildah --variant $* --tag $(IMAGE):$(VERSION)-$* $(IMAGE_BUILD_ARGS)
else
	$(CONTAINER) build -f deploy/docker/Dockerfile --build-arg VARIANT=$* $(IMAGE_BUILD_ARGS) \
		-t $(IMAGE):$(VERSION)-$* .
endif

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
