# The worker image for docker-compose.yml. The system Python, no virtual environment (R19).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY streams ./streams
COPY projections ./projections
COPY cdb ./cdb
RUN python3 -m pip install --no-cache-dir .
ENV USE_SYSTEM_PYTHON=true
CMD ["python3", "-m", "cdb", "worker"]
