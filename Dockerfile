# Small runtime image: the package and its dependencies, data in /data.
# The base is pinned to a full version so a rebuild gets the same Python; bump it on purpose.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY output_service ./output_service
# A fixed UID/GID (10001), so a bind-mounted data directory can be given to it on the
# host: `chown 10001:10001 ./data`.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 output \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home output \
    && mkdir -p /data && chown 10001:10001 /data

USER 10001:10001
VOLUME ["/data"]
# db_dir through the environment, not a flag baked into the entrypoint, so that
# `docker run -e OUTPUT_SERVICE_DB_DIR=...` can change it. The environment beats a
# config file: keep the volume at /data, or set this variable to the file's db_dir.
ENV OUTPUT_SERVICE_DB_DIR=/data
EXPOSE 8081 8091
STOPSIGNAL SIGTERM
# The probe reads the same settings as the service (OUTPUT_SERVICE_CONFIG and the
# OUTPUT_SERVICE_* variables), so a changed health_port is probed where it is.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD python -c \
    "import os, urllib.request; from output_service.config import load_config; port = load_config([], os.environ).health_port; urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=4)"
ENTRYPOINT ["output-service"]
