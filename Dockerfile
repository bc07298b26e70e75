# Hugging Face Space (Docker SDK) and any container host: the same install steps as the README.
# mmcv 2.1.0 has no wheel for this torch, so it is built from source here (about 10 minutes).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
WORKDIR /home/user/app
# torch's CPU build (the default PyPI wheel is the CUDA one, several GB).
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 PYTHON=python3.11
COPY --chown=user requirements.txt requirements-dev.txt pyproject.toml README.md ./
COPY --chown=user scripts ./scripts
COPY --chown=user nailseg ./nailseg
RUN scripts/setup.sh
COPY --chown=user . .
EXPOSE 7860
CMD [".venv/bin/python", "app.py"]
