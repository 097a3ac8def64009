# The Understudy operator image: the `understudy` package on a slim Python base, run as a non-root user.
# The Helm chart (charts/understudy) runs it with `understudy run ...`, a read-only root filesystem and
# runAsUser 65532; keep the UID, the entrypoint and the version label in step with the chart.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY operator ./operator
# Wheels for the package and every dependency, so the final stage needs no compiler and no source tree.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="understudy" \
      org.opencontainers.image.description="Kubernetes operator for ML model fallback" \
      org.opencontainers.image.version="0.1.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 65532 understudy \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin understudy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels understudy \
 && rm -rf /wheels
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["understudy"]
CMD ["--help"]
