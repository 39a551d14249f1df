# Container image of the task notification service.
#
# Stage "deps" builds a virtualenv from pyproject.toml alone, so the layer
# holding the dependencies is rebuilt only when pyproject.toml changes, not on
# every source edit. Stage "runtime" copies that virtualenv and the source.
#
# The project itself is not installed into site-packages: it runs from /app,
# with /app/service next to /app/sql, because service/migrations.py reads the
# migrations from <package dir>/../sql. `python -m service` run from /app
# imports /app/service (the working directory comes first on sys.path).
#
# Checked statically by tests/test_container_files.py; built with podman (or
# Docker) and run by tests/e2e/test_container.py.

FROM python:3.11-slim-bookworm AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml ./
# [project.dependencies] only, so no embedded PostgreSQL (the 'embedded'
# extra): a requirements file keeps extras such as pydantic[email] away from
# shell globbing. No compiler is installed, so a
# dependency without a wheel for this platform fails here, loudly.
RUN /opt/venv/bin/python -c "import pathlib, tomllib; deps = tomllib.loads(pathlib.Path('pyproject.toml').read_text())['project']['dependencies']; pathlib.Path('requirements.txt').write_text('\n'.join(deps) + '\n')" \
 && /opt/venv/bin/pip install --requirement requirements.txt


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="task-notify-service" \
      org.opencontainers.image.description="Bulk task updates with background e-mail notifications (transactional outbox)"

# HOST: the default 127.0.0.1 would be unreachable from outside the container.
# DATA_DIR: only used without DATABASE_URL (embedded PostgreSQL) and by the
# file e-mail provider; it must be writable by the service's user.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/app/.data \
    EMAIL_FILE_DIR=/app/.data/mail

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY service/ ./service/
COPY sql/ ./sql/
# Byte-compile once at build time: the source is root-owned and read-only
# for the service's user, which could not write __pycache__ itself.
RUN python -m compileall -q service \
 && mkdir -p /app/.data \
 && chown app:app /app/.data

# The file e-mail provider's folder (and an embedded database's, which this
# image cannot run: pgserver is the optional 'embedded' extra, not installed
# here, so DATABASE_URL is required). Declared after the chown: a new volume
# starts as a copy of the folder, owned by the service's user.
VOLUME /app/.data

# Numeric, so that "runAsNonRoot" checks can verify it without /etc/passwd.
USER 10001:10001

EXPOSE 8000

# The service drains on SIGTERM: hypercorn stops accepting, consumers get
# DRAIN_SECONDS to finish; unsent e-mails stay pending in the outbox.
STOPSIGNAL SIGTERM

# No curl in the slim image: the standard library does the request. urlopen
# raises on a non-2xx answer, so a 503 from /readyz marks the container
# unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]

CMD ["python", "-m", "service"]
