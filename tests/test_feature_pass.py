"""The feature pass writes one feature vector per image read, at Flickr8k's size, and says so when not.

The Beam part of the ImageFeatureGen (feature_gen.write_features) runs with
the Beam options the local runner gives it (pipeline/beam_args.py), on
examples of Flickr8k's size in bytes; `features_artifact.reconcile` compares the
ids written with the ids read. Why the DirectRunner's multi-process and
multi-thread modes lost images here is in
`beam_args.direct_in_process_beam_args`.
"""
import io
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np
from PIL import Image
import pytest
from tfx.types import artifact_utils

from components import names
from components import progress
from components import records
from components.encoder import features_artifact
from components.encoder import feature_gen
from pipeline import beam_args
from testing import examples as examples_lib
from testing import feature_pass

# Flickr8k's split sizes and ~750 MB of JPEG bytes: 8,000 records of a 500x375
# JPEG of ~95 KB (noise at quality 60).
FLICKR8K_SPLITS = {'train': 6000, 'eval': 1000, 'demo': 1000}


def _noise_jpeg(width: int = 500, height: int = 375, quality: int = 60) -> bytes:
  pixels = np.random.RandomState(0).randint(0, 256, (height, width, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _run_feature_pass(examples, handler, out_dir, options):
  split_paths = {split: records.split_files(examples, split)
                 for split in artifact_utils.decode_split_names(examples.split_names)}
  read = {split: features_artifact.image_ids(paths) for split, paths in split_paths.items()}
  with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
    feature_gen.write_features(pipeline, split_paths, handler, str(out_dir),
                               sum(map(len, read.values())))
  return read


def test_no_image_lost_at_flickr8k_size(tmp_path, caplog):
  """8,000 records of ~95 KB through a slow handler, as the local runner runs the pass
  (at least 12.5 s of sleeping: the progress bar must have moved before its end)."""
  caplog.set_level(logging.DEBUG, logger=progress.logger.name)  # the bar's updates too
  image = _noise_jpeg()
  assert 80_000 < len(image) < 120_000
  examples = feature_pass.write_repeated_examples(tmp_path / 'examples', FLICKR8K_SPLITS, image)
  options = beam_args.direct_node_beam_args(2)[names.FEATURE_GEN]
  read = _run_feature_pass(examples, feature_pass.FakeBackbone(seconds_per_batch=0.05),
                           tmp_path / 'features', options)
  assert {split: len(ids) for split, ids in read.items()} == FLICKR8K_SPLITS
  assert features_artifact.reconcile(str(tmp_path / 'features'), read) == FLICKR8K_SPLITS
  vectors = features_artifact.read_features(str(tmp_path / 'features'), 'demo', feature_dtype='float32')
  assert len(vectors) == 1000 and all(v.tolist() == [len(image)] for v in vectors.values())
  # In the component's process, so the console's handler of captioner.progress sees it.
  states = [record.progress for record in caplog.records if hasattr(record, 'progress')]
  assert len(states) >= 2 and not states[0].finished
  assert states[-1].finished and states[-1].done == states[-1].total == sum(FLICKR8K_SPLITS.values())


def test_a_lost_image_fails_the_pass_naming_split_and_id(tmp_path):
  images = examples_lib.captioned_images(12)
  ids = sorted(images)
  splits = {'train': {i: images[i] for i in ids[:8]}, 'eval': {i: images[i] for i in ids[8:10]},
            'demo': {i: images[i] for i in ids[10:]}}
  examples = examples_lib.write_examples(str(tmp_path / 'examples'), splits)
  lost = ids[9]  # in eval
  handler = feature_pass.FakeBackbone(batch_size=1, drop=[images[lost][0]])
  read = _run_feature_pass(examples, handler, tmp_path / 'features',
                           beam_args.direct_in_process_beam_args())
  with pytest.raises(features_artifact.MissingFeaturesError,
                     match=rf"split 'eval': 1 of 2 images missing: \['{lost}'\]") as error:
    features_artifact.reconcile(str(tmp_path / 'features'), read)
  assert 'train' not in str(error.value) and 'demo' not in str(error.value)
