# One image for every medialog role (docker-compose.yml runs it as api, actors, workers,
# projections and the one-shot migrate/topics/buckets/keys services).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg and ffprobe: the transcoder and /health/ready need both.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# A regular (non-editable) install: the wheel carries medialog, streams, projections and the
# schemas/ tree as medialog/_schemas (pyproject.toml, hatch force-include).
COPY . /tmp/medialog-src
RUN pip install /tmp/medialog-src && rm -rf /tmp/medialog-src

# Non-root. /var/lib/medialog is MEDIALOG_DATA_DIR in docker-compose.yml; keys/ is where a
# named volume holding the token signing key is mounted (created here so the volume inherits
# this owner and mode).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/medialog \
        --shell /usr/sbin/nologin medialog \
    && mkdir -p /var/lib/medialog/keys \
    && chown -R medialog:medialog /var/lib/medialog \
    && chmod 0700 /var/lib/medialog/keys
USER medialog
WORKDIR /var/lib/medialog

EXPOSE 8080
ENTRYPOINT ["medialog"]
CMD ["--help"]
