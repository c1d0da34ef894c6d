# One image for `tandem serve` (the default), `tandem worker` and `tandem migrate`.
#
# tests/test_container.py runs the builder stage's COPY and RUN steps as written here in
# a clean virtualenv and starts the result, and checks the final stage's user, entry
# point and health check: keep every builder step a plain command that can run outside
# a container.

# The builder: the locked dependencies (uv.lock) and Tandem into a virtualenv.
FROM python:3.11-slim AS builder

# The uv of the Makefile (UV_VERSION): the lock is read by the version that wrote it.
ARG UV_VERSION=0.13.8
ENV UV_PROJECT_ENVIRONMENT=/opt/tandem/venv \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /opt/tandem
# Dependencies first, in a layer of their own that a change to the code leaves cached.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Tandem itself, installed editable: app/migrations.py finds alembic/ beside app/. Byte-
# compiled once, here: the final image's filesystem is read-only to its user.
COPY README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --compile-bytecode

# The final image: the base Python, the virtualenv and the code; no uv, no compiler.
FROM python:3.11-slim

ENV PATH=/opt/tandem/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TANDEM_HOST=0.0.0.0 \
    TANDEM_PORT=8000 \
    TANDEM_WORKER_HEALTH_PORT=8001 \
    TANDEM_DATA_DIR=/var/lib/tandem

RUN groupadd --system --gid 10001 tandem \
    && useradd --system --uid 10001 --gid tandem --no-create-home \
       --home-dir /var/lib/tandem --shell /usr/sbin/nologin tandem \
    && mkdir -p /var/lib/tandem \
    && chown tandem:tandem /var/lib/tandem

WORKDIR /opt/tandem
# Owned by root: the code and the virtualenv are read-only to the user that runs them.
COPY --from=builder /opt/tandem /opt/tandem

USER 10001:10001
# The API; a worker's /healthz, /readyz and /metrics.
EXPOSE 8000 8001

# Healthy when the API's /healthz answers, or a worker's on its health port
# (`tandem migrate` is a one-off and has neither).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request\nfor port in (os.environ.get('TANDEM_PORT', '8000'), os.environ.get('TANDEM_WORKER_HEALTH_PORT', '8001')):\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)\n        raise SystemExit(0)\n    except OSError:\n        pass\nraise SystemExit(1)"]

ENTRYPOINT ["tandem"]
CMD ["serve"]
