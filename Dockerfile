# The orderflow image: workers, HTTP API and migrations all run from it (see docker-compose.yml).
# Built once (`docker compose build`); dependencies are the pinned runtime block of
# requirements.txt, the package itself goes on top without dependencies. Runs as a non-root user.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. Only the "# Runtime" block:
# the notebook, lint and test tools and the editable install (`-e .`) stay out of the image
# (scripts/runtime-requirements.sh; tests/test_packaging.py runs the same script).
COPY requirements.txt ./
COPY scripts/runtime-requirements.sh ./scripts/
RUN python -m venv /opt/venv \
 && sh scripts/runtime-requirements.sh requirements.txt > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt \
 && rm /tmp/runtime.txt

COPY pyproject.toml README.md ./
COPY orderflow ./orderflow
# Byte-compiled at build time: the workflow sandbox re-imports workflow modules for every run,
# and the non-root user cannot write .pyc files into the venv (orderflow/worker.py).
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv/lib/python3.11/site-packages/orderflow \
 && useradd --system --uid 10001 --create-home --home-dir /home/orderflow orderflow

USER orderflow
WORKDIR /home/orderflow
ENV ORDERFLOW_HOME=/home/orderflow
CMD ["orderflow", "--help"]
