# One image for every parceltrack service; the command picks the stage.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY parceltrack parceltrack
COPY storage storage
COPY edge edge
COPY ingest ingest
COPY detect detect
COPY api api
COPY notify notify
COPY quality quality
COPY firmware_sim firmware_sim
COPY bench bench
COPY composition composition
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["parceltrack"]
