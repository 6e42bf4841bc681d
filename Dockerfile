# Small runtime image: the package and its dependencies, data in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY output_service ./output_service
RUN pip install --no-cache-dir . && useradd --system --home /data output && mkdir -p /data \
    && chown output /data

USER output
VOLUME ["/data"]
EXPOSE 8081 8091
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD python -c \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8091/ready', timeout=2)"
ENTRYPOINT ["output-service", "--db-dir", "/data"]
