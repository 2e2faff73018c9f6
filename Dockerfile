# imgproxy: authenticated proxy for private S3 images.
#
#   docker build -t imgproxy-s3 .
#   docker run -p 8080:8080 -v $PWD/config.toml:/etc/imgproxy/config.toml:ro imgproxy-s3
#   docker run -p 8080:8080 -e IMGPROXY_CONFIG_TOML="$(cat config.toml)" imgproxy-s3
#
# The config must set   [server] host = "0.0.0.0"   (the default, 127.0.0.1, is unreachable from
# outside the container) and keep port 8080 (the default), which EXPOSE and HEALTHCHECK assume.
# Secrets belong in the environment (`env:VAR_NAME` in the config; -e VAR_NAME=…), not the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    IMGPROXY_CONFIG=/etc/imgproxy/config.toml

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 imgproxy \
 && useradd --system --uid 10001 --gid imgproxy --no-create-home --shell /usr/sbin/nologin imgproxy \
 && mkdir -p /etc/imgproxy

# Dependencies first, exactly as locked (every file's sha256 checked), in their own layer so a code
# change does not reinstall them; then the package itself without resolving anything again.
# runtime.txt has the heif extra (pillow-heif: HEIC phone photos as transform input); its wheel
# bundles libheif and libde265 (LGPL-3.0) and x265 (GPL-2.0): README, "HEIF/HEIC input".
# `docker build --build-arg HEIF=0 .` leaves it out.
ARG HEIF=1
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt \
 && if [ "$HEIF" = 0 ]; then pip uninstall -y -q pillow-heif; fi \
 && rm /tmp/runtime.txt
# The build context is filtered by .dockerignore: no .venv, .git, tests, local configs.
COPY . /tmp/imgproxy-src
RUN pip install --no-cache-dir --no-deps /tmp/imgproxy-src \
 && rm -rf /tmp/imgproxy-src

USER 10001:10001
EXPOSE 8080

# slim has no curl: python's urllib, which exits non-zero on a refused connection or a non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["imgproxy", "serve"]
