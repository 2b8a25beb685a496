#!/usr/bin/env bash
# Serves the Pusher's base directory with the stock TF Serving image.
#
#   serving/deploy/docker-run.sh <serving_dir> [tensorflow/serving tag]
#
# <serving_dir> is the Pusher's push destination: it holds captioner/<version>/.
# gRPC (PredictionService, ModelService) on localhost:8500, REST on
# localhost:8501. New versions pushed into <serving_dir>/captioner are loaded
# without a restart. Stop with Ctrl-C or `docker stop captioner-serving`.
set -euo pipefail

SERVING_DIR=$(cd "${1:?usage: $0 <serving_dir> [tensorflow/serving tag]}" && pwd)
TAG=${2:-2.16.1}  # the TF Serving release matching the TensorFlow that trained the model
DEPLOY_DIR=$(cd "$(dirname "$0")" && pwd)

exec docker run --rm --name captioner-serving \
  -p 8500:8500 -p 8501:8501 \
  --mount "type=bind,source=${SERVING_DIR},target=/models,readonly" \
  --mount "type=bind,source=${DEPLOY_DIR},target=/config,readonly" \
  --entrypoint tensorflow_model_server \
  "tensorflow/serving:${TAG}" \
  --port=8500 \
  --rest_api_port=8501 \
  --model_config_file=/config/models.config \
  --file_system_poll_wait_seconds=10 \
  --enable_batching=true \
  --batching_parameters_file=/config/batching_parameters.txt
