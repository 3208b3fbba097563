# The kubehoist image (the guard's static pod runs `kubehoist guard run` from it).
#   docker build -t <registry>/kubehoist:<version> .
#   kubehoist guard install --image <registry>/kubehoist:<version>
FROM python:3.11-slim
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --no-cache-dir /src && rm -rf /src
USER 0
ENTRYPOINT ["kubehoist"]
