# kanitts-vllm, GPU image: CUDA runtime + the vLLM extra (vLLM brings its matching torch).
#   docker build -t kanitts-vllm:latest .
#   docker run --gpus all -p 32855:32855 -e KANITTS_API_KEYS=sk-change-me \
#     -v kanitts-hf:/home/kanitts/.cache/huggingface kanitts-vllm:latest
# See docs/deployment.md.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Non-root user; the Hugging Face cache is a volume it owns.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin kanitts \
 && mkdir -p /home/kanitts/.cache/huggingface \
 && chown -R kanitts:kanitts /home/kanitts/.cache
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/kanitts
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[vllm]" && python -c "import kanitts, vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"

USER kanitts
ENV HOME=/home/kanitts \
    HF_HOME=/home/kanitts/.cache/huggingface \
    KANITTS_SERVER__HOST=0.0.0.0 \
    KANITTS_SERVER__PORT=32855
VOLUME ["/home/kanitts/.cache/huggingface"]
EXPOSE 32855
# /health answers as soon as the port is up (models load in the background); the
# start period covers the first model download.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:32855/health', timeout=4)" || exit 1
CMD ["kanitts", "serve", "--host", "0.0.0.0", "--port", "32855"]
