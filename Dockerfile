# syntax=docker/dockerfile:1
# MADE inference service for NVIDIA GPUs: a slim Python base with PyTorch's CUDA build from PyPI (its
# CUDA libraries come as pip packages; the host needs the NVIDIA driver and Container Toolkit).
#   docker build -t made-service:0.1.0 .
#   docker run --rm --gpus all -p 8000:8000 made-service:0.1.0            # GPU
#   docker run --rm -e MADE_DEVICE=cpu -p 8000:8000 made-service:0.1.0   # the same image on CPU
# CPU-only hosts: docker/Dockerfile.cpu (the same image with the CPU build of torch, a fraction the size).
# torch is TORCH_VERSION, the version the tests run (the Makefile's TORCH_PIN; tests/deploy checks both).
# Every setting is an environment variable MADE_<FIELD> (docs/operations.md); models are baked in at
# /opt/made/models and a volume mounted there replaces them.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: the project wheel (pure Python), so the runtime stage gets no sources or build tools ----
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
# The serving requirements (base + [server], torch aside), from pyproject.toml alone: the layer installing
# them is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = [d for d in p['dependencies'] + p['optional-dependencies']['server'] if not d.startswith('torch')]; \
open('/requirements.txt', 'w').write(''.join(d + chr(10) for d in deps))"
COPY README.md LICENSE ./
COPY service ./service
# The build backend is pinned (not whatever PyPI has today), so the same sources give the same wheel.
RUN python -m pip install --no-cache-dir "setuptools==84.2.1" \
 && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# ---- runtime ----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer (the largest, and the one that changes least); PyPI's Linux build is the
# CUDA one. The other requirements are then constrained to that exact build, so pip never swaps it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=
RUN python -m pip install ${TORCH_INDEX} "torch==${TORCH_VERSION}" \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
COPY --from=builder /requirements.txt /tmp/requirements.txt
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/torch-constraint.txt \
 && python -m pip install --constraint /tmp/torch-constraint.txt --requirement /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/torch-constraint.txt
COPY --from=builder /dist/ /tmp/wheels/
RUN python -m pip install --no-deps /tmp/wheels/*.whl \
 && python -c "import service.api.app, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && rm -rf /tmp/wheels

# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it (docker/k8s/made.yaml uses the same).
RUN groupadd --system --gid 10001 made \
 && useradd --system --uid 10001 --gid made --home-dir /opt/made --shell /usr/sbin/nologin made
WORKDIR /opt/made
COPY docker/healthcheck.py /opt/made/healthcheck.py
COPY models/ /opt/made/models/

ENV MADE_HOST=0.0.0.0 \
    MADE_PORT=8000 \
    MADE_MODEL_DIR=/opt/made/models \
    MADE_DEVICE=auto \
    NUMBA_CACHE_DIR=/tmp/numba-cache
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "/opt/made/healthcheck.py"]
CMD ["python", "-m", "service", "serve"]
