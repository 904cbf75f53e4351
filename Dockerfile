# Checkpoint service image: one process kind per container (`checkpoint serve`).
# Build: docker build -t checkpoint .    Run: docker run -p 8000:8000 -v checkpoint-data:/var/lib/checkpoint checkpoint

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY requirements/runtime.lock ./requirements/
# The locked versions, hashes checked: with the PostgreSQL driver and PKCS#11, so
# CHECKPOINT_DATABASE_URL=postgresql+asyncpg://... and CHECKPOINT_SIGNER=pkcs11 need nothing more.
RUN pip install --require-hashes -r requirements/runtime.lock
COPY checkpoint ./checkpoint
COPY issuer ./issuer
COPY api ./api
RUN pip install --no-deps . && checkpoint --help > /dev/null

FROM python:3.11-slim
# Pillow's wheel lays Arabic out with raqm but loads FriBiDi from the system; without it the
# printable permit cards refuse to render rather than print isolated letters (issuer/card.py).
RUN apt-get update && apt-get install -y --no-install-recommends libfribidi0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/checkpoint --create-home checkpoint
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHECKPOINT_DATA_DIR=/var/lib/checkpoint \
    CHECKPOINT_HOST=0.0.0.0 \
    CHECKPOINT_PORT=8000
USER checkpoint
WORKDIR /var/lib/checkpoint
VOLUME ["/var/lib/checkpoint"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['CHECKPOINT_PORT']}/health\", timeout=2)"]
ENTRYPOINT ["checkpoint"]
CMD ["serve"]
