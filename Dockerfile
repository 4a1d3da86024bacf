# A small image that runs A³E as a non-root user.
#   docker build -t a3e . && docker run -p 8000:8000 --env-file .env a3e
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/a3e && /opt/a3e/bin/pip install --no-compile . \
    && find /opt/a3e -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
RUN groupadd --system --gid 10001 a3e \
    && useradd --system --uid 10001 --gid a3e --home-dir /var/lib/a3e --create-home a3e
COPY --from=build /opt/a3e /opt/a3e
ENV PATH=/opt/a3e/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    A3E_DATA_DIR=/var/lib/a3e/data \
    PORT=8000
USER a3e
WORKDIR /var/lib/a3e
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["a3e", "serve"]
