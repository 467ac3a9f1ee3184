# AURA Live in a container: the app, its pinned requirements and the system tools it uses.
# Models are not in the image: they download at first start into the /cache volume.
#   docker build -t aura-live .
#   docker run --gpus all --network host -v aura-cache:/cache -v "$PWD/recordings:/recordings" aura-live
# (see docs/deploy.md; compose.yaml runs two instances behind nginx)
# BASE: any Debian/Ubuntu image with Python >= 3.11 in apt works (a CPU-only one for the
# offline preset, e.g. --build-arg BASE=debian:bookworm-slim); torch's wheels bring CUDA.
ARG BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    # the launcher's first-run set-up is done here at build time
    AURALIVE_SKIP_SETUP=1 \
    # every model cache lives on the mounted volume
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    XDG_DATA_HOME=/cache/share \
    TTS_HOME=/cache/tts

RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-venv python3-dev build-essential \
        ffmpeg espeak-ng libportaudio2 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt .
RUN pip install --disable-pip-version-check -q -r requirements.txt

COPY launch.py ./
COPY app ./app
COPY model ./model
COPY speech ./speech
COPY ui ./ui
COPY assets ./assets
# the offline preset's tiny models are built into the project's .cache: keep it on the volume
RUN mkdir -p /cache /recordings && ln -s /cache/aura /app/.cache

VOLUME ["/cache", "/recordings"]
EXPOSE 7860
# readiness is 503 while full or draining; liveness is what a container health check wants
# (set the port with AURA_APP_PORT, not --port, so that this check finds it)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m \
    CMD curl -fsS "http://127.0.0.1:${AURA_APP_PORT:-7860}/healthz" || exit 1
# SIGTERM drains: replies finish (up to --drain-s), recordings close, exit 0
STOPSIGNAL SIGTERM
# (the cache folders are made at start: a fresh bind mount or volume is empty)
ENTRYPOINT ["sh", "-c", "mkdir -p /cache/aura && exec python launch.py --host 0.0.0.0 --recordings-dir /recordings \"$@\"", "aura-live"]
CMD []
