# Hugging Face Space (Docker SDK) and any container host: the same install steps as the README
# (scripts/setup.sh). mmcv 2.1.0 has no wheel for this torch, so it is built from source here.
# Two variants, picked by one build argument (docs/spaces.md):
#   docker build .                                     CPU (the default, free Spaces hardware)
#   docker build --build-arg NAILSEG_HARDWARE=cuda .   GPU: mmcv with CUDA ops, torch's CUDA wheel
# A Space passes its variables as build arguments: a Space variable NAILSEG_HARDWARE=cuda does it.
ARG NAILSEG_HARDWARE=cpu

FROM python:3.11-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# PyPI's torch wheel for Linux is the CUDA one (several GB); this index has the CPU build.
ENV NAILSEG_TORCH_INDEX=https://download.pytorch.org/whl/cpu

# nvcc (a *devel* image) compiles mmcv's CUDA ops. CUDA 12.6 is one of torch 2.13's two stable
# builds (cu126, cu130); 12.x needs an older host driver than 13.0 and is what mmcv 2.1.0 knows.
FROM nvidia/cuda:12.6.3-devel-ubuntu22.04 AS cuda
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 22.04's Python is 3.10; NailSeg pins 3.11 (deadsnakes has it with venv and headers).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
       build-essential git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
ENV NAILSEG_TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
    NAILSEG_MMCV_ENV=scripts/mmcv-cuda.env

FROM ${NAILSEG_HARDWARE} AS app
# Spaces run the container as uid 1000.
RUN useradd -m -u 1000 user
USER user
WORKDIR /home/user/app
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 PYTHON=python3.11
# pip keeps every wheel it downloads or builds (mmcv's too) in ~/.cache/pip; in the image that
# cache is dead weight in the setup layer: nothing installs there twice.
ENV PIP_NO_CACHE_DIR=1
# The packages first, from only what that step reads (the pins, pyproject.toml, setup.sh and the
# CUDA variant's build flags): a push that changes the code, the model or another script reuses
# this layer instead of compiling mmcv again (15 minutes to an hour).
COPY --chown=user requirements.txt requirements-dev.txt pyproject.toml ./
COPY --chown=user scripts/setup.sh scripts/mmcv-cuda.env ./scripts/
RUN scripts/setup.sh --deps-only
# Then NailSeg itself (an editable install of the code copied here: seconds).
COPY --chown=user . .
RUN scripts/setup.sh
EXPOSE 7860
CMD [".venv/bin/python", "app.py"]
