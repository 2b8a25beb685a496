# The captioner pipeline image: every Kubeflow Pipelines step runs in it, and it
# doubles as the Beam SDK container of Dataflow / Flink workers.
#
#   docker build -t <registry>/captioner:<tag> .
#   docker push <registry>/captioner:<tag>
#   python -m pipeline.kubeflow_runner compile --image <registry>/captioner:<tag> ...
#
# See docs/kubeflow.md for what it holds and why.

# Keep these equal to the tfx and apache-beam pins in requirements/constraints.txt
# (tests/test_kubeflow_runner.py checks).
ARG TFX_VERSION=1.16.0
ARG BEAM_VERSION=2.61.0

# Only for its worker boot program, matched to the pinned Beam SDK.
FROM apache/beam_python3.10_sdk:${BEAM_VERSION} AS beam

FROM gcr.io/tfx-oss-public/tfx:${TFX_VERSION}

# The base image's boot program belongs to the Beam it was built with; the pins
# below replace that Beam, so the boot program is replaced to match. It stays the
# ENTRYPOINT (Dataflow and Flink workers start it); KFP steps override the
# command with TFX's executor entrypoint.
COPY --from=beam /opt/apache/beam /opt/apache/beam

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project source; pipeline/kubeflow_runner.py's IMAGE_WORKDIR points here
# (the components read schemas/schema.pbtxt from it).
WORKDIR /pipeline

# Dependencies first, in their own layer: a code change does not re-resolve them.
# With no package folders copied yet, this installs only the pinned dependency
# set (the project's own packages come in the next step).
COPY setup.py pyproject.toml ./
COPY requirements/ requirements/
RUN python -m pip install -c requirements/constraints.txt .

# The project itself, over the dependencies installed above; then a smoke test
# that the installed copy (not the source folder) imports with the pinned set.
COPY . .
RUN python -m pip install --no-deps --force-reinstall . \
    && cd / && python -c "import components.features, pipeline.pipeline"
