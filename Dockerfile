# The kubehoist image (the guard's static pod runs `kubehoist guard run` from it), for
# those with Docker:
#   docker build -t <registry>/kubehoist:<version> .
#   kubehoist guard install --image <registry>/kubehoist:<version>
# Without Docker, `kubehoist image build` makes an equivalent image (the same CLI and
# entrypoint, on Debian's python3 instead of python:3.11-slim) as a reproducible OCI
# archive; see docs/install.md. Both run as root with `kubehoist` as entrypoint.
FROM python:3.11-slim
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --no-cache-dir /src && rm -rf /src
USER 0
ENTRYPOINT ["kubehoist"]
