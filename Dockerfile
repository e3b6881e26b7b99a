# billing-engine: the `billing` command (API server, run-cycle, admin CLI) in one image.
#   docker build -t billing-engine .
#   docker run --rm billing-engine --version
# Build stage: turn the source tree into a wheel (no compilers or sources in the final image).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY billing_engine ./billing_engine
COPY api ./api
COPY cli ./cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: the wheel and its dependencies, a non-root user, `billing` as the entry point.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BILLING_LOG_FORMAT=json
RUN groupadd --system --gid 10001 billing \
    && useradd --system --uid 10001 --gid billing --home-dir /home/billing --create-home --shell /usr/sbin/nologin billing
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/billing_engine-*.whl --find-links /wheels \
    && rm -rf /wheels
USER 10001:10001
WORKDIR /home/billing
EXPOSE 8000
# The API's liveness + database check; the scheduler service of compose.yaml turns it off.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["billing"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
