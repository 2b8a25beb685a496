"""The frozen backbone in float32 and in bfloat16, side by side in one run, as one JSON line.

VGG16 fc2 at 224 px (the real-data encoder) with random weights, the same
weights in both precisions, each built and saved as the ImageFeatureGen builds
and saves it and run through the feature pass's own handler
(backbone_handler.BackboneHandler: the saved bytes -> features signature, decoding
included) on `--num_images` JPEGs of `--jpeg_width` x `--jpeg_height` (Flickr8k's
typical 500x375), in batches of the feature pass's size. The two precisions
take turns batch by batch, so load that comes and goes on a shared host hits
both alike; one warm-up batch each is not timed.

Prints: images/s of each precision and their ratio (bfloat16 / float32), the
smallest cosine similarity between an image's two feature vectors, and the
largest relative difference |bf16 - f32| / |f32| (L2 norms) over the images;
with the CPU's bfloat16 flags and what --precision auto resolves to here.

Usage: .venv/bin/python -m bench.precision [--num_images 256] [--batch_size 32]
"""
import argparse
import io
import json
import multiprocessing
import tempfile
import time
from typing import Dict, List

import numpy as np
from PIL import Image
import tf_keras as keras

from components import config as config_lib
from components.encoder import features_artifact
from components.encoder import backbone_handler
from components.encoder import feature_gen
from components.encoder import precision as precision_lib


def _photos(count: int, width: int, height: int) -> List[bytes]:
  """`count` photo-like JPEGs: smooth random colour fields with fine noise, quality 90
  (about the byte size of Flickr8k's photos, so decoding costs what it costs there)."""
  rng = np.random.default_rng(0)
  photos = []
  for _ in range(count):
    coarse = Image.fromarray(rng.integers(0, 256, [height // 25, width // 25, 3], dtype=np.uint8))
    pixels = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.int16)
    pixels = np.clip(pixels + rng.integers(-30, 31, pixels.shape), 0, 255).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format='JPEG', quality=90)
    photos.append(encoded.getvalue())
  return photos


def _handler(precision: str, work_dir: str):
  """(handler, loaded model) of a random VGG16 fc2 saved as the ImageFeatureGen saves it."""
  keras.utils.set_random_seed(0)  # the same weights in both precisions
  extractor, _ = feature_gen.build_encoder(
      config_lib.EncoderConfig(backbone='vgg16', backbone_weights=None, pooling='fc2', precision=precision))
  model_dir = features_artifact.backbone_dir(f'{work_dir}/{precision}')
  features_artifact.save_backbone(extractor, model_dir)
  handler = backbone_handler.BackboneHandler(model_dir)
  return handler, handler.load_model()


def _features(handler, model, batch: List[bytes]) -> np.ndarray:
  return np.stack([result.inference for result in handler.run_inference(batch, model)])


def measure(photos: List[bytes], batch_size: int) -> Dict:
  with tempfile.TemporaryDirectory(prefix='precision_bench_') as work_dir:
    runners = {p: _handler(p, work_dir) for p in config_lib.RESOLVED_PRECISIONS}
    seconds = dict.fromkeys(runners, 0.0)
    vectors = {p: [] for p in runners}
    for handler, model in runners.values():
      _features(handler, model, photos[:batch_size])  # warm-up: tracing, kernel choice
    for start in range(0, len(photos), batch_size):
      for precision, (handler, model) in runners.items():
        began = time.perf_counter()
        vectors[precision].append(_features(handler, model, photos[start:start + batch_size]))
        seconds[precision] += time.perf_counter() - began
  single, half = (np.concatenate(vectors[p]) for p in config_lib.RESOLVED_PRECISIONS)
  norms = np.linalg.norm(single, axis=1)
  cosine = np.sum(single * half, axis=1) / (norms * np.linalg.norm(half, axis=1))
  rates = {p: len(photos) / s for p, s in seconds.items()}
  return {
      'float32_images_per_second': round(rates['float32'], 2),
      'bfloat16_images_per_second': round(rates['bfloat16'], 2),
      'ratio_bfloat16_to_float32': round(rates['bfloat16'] / rates['float32'], 2),
      'min_cosine_similarity': round(float(cosine.min()), 6),
      'max_relative_difference': round(float(np.max(np.linalg.norm(half - single, axis=1) / norms)), 5),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=256, help='JPEGs encoded (default %(default)s).')
  parser.add_argument('--batch_size', type=int, default=backbone_handler.DEFAULT_BATCH_SIZE)
  parser.add_argument('--jpeg_width', type=int, default=500)
  parser.add_argument('--jpeg_height', type=int, default=375)
  args = parser.parse_args()
  photos = _photos(args.num_images, args.jpeg_width, args.jpeg_height)
  flags = sorted(set(precision_lib.BFLOAT16_CPU_FLAGS) & precision_lib.cpu_flags())
  print(json.dumps({
      'num_images': args.num_images,
      'jpeg_size': f'{args.jpeg_width}x{args.jpeg_height}',
      'jpeg_kilobytes_mean': round(sum(map(len, photos)) / len(photos) / 1000, 1),
      'backbone': 'vgg16 fc2 224 px, random weights',
      'batch_size': args.batch_size,
      'cores': multiprocessing.cpu_count(),
      'cpu_bfloat16_flags': flags,
      'auto_resolves_to': precision_lib.resolve(config_lib.AUTO_PRECISION),
      **measure(photos, args.batch_size),
  }))


if __name__ == '__main__':
  main()
