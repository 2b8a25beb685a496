"""The backbone's precision: what 'auto' resolves to, the bfloat16 feature pass and serving
graph (exact parity, stock TensorFlow without oneDNN), and features that do not depend on
the batch an image lands in, in float32 and in bfloat16."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components import config as config_lib
from components import names
from components.artifacts import ImageFeatures
from components.encoder import features_artifact
from components.encoder import backbone_handler
from components.encoder import feature_gen
from components.encoder import image_features
from components.encoder import precision as precision_lib
from components.training import exporter
from pipeline import settings
from testing import tiny_model
from testing import examples as test_examples
from testing import executors
from testing import images as test_images

PRECISIONS = config_lib.RESOLVED_PRECISIONS


# --- What 'auto' means ---

def _cpuinfo(tmp_path, flags):
  path = tmp_path / 'cpuinfo'
  path.write_text(''.join(f'processor\t: {cpu}\nflags\t\t: fpu sse2 avx2 {flags}\n\n' for cpu in range(2)))
  return str(path)


def test_auto_is_bfloat16_only_on_cpus_with_bfloat16_units(tmp_path, monkeypatch):
  monkeypatch.setattr(tf.config, 'list_physical_devices', lambda kind=None: [])  # a CPU-only machine
  assert precision_lib.resolve('auto', _cpuinfo(tmp_path, 'avx512f amx_tile amx_bf16')) == 'bfloat16'
  assert precision_lib.resolve('auto', _cpuinfo(tmp_path, 'avx512f avx512_bf16')) == 'bfloat16'
  assert precision_lib.resolve('auto', _cpuinfo(tmp_path, 'avx512f avx512_vnni')) == 'float32'
  assert precision_lib.resolve(None, str(tmp_path / 'no_such_file')) == 'float32'


def test_explicit_precisions_are_kept_and_others_refused(tmp_path):
  cpuinfo = _cpuinfo(tmp_path, 'amx_bf16')
  assert [precision_lib.resolve(p, cpuinfo) for p in PRECISIONS] == list(PRECISIONS)
  with pytest.raises(ValueError, match=r"'float16'.*'auto', 'float32', 'bfloat16'"):
    precision_lib.resolve('float16')
  with pytest.raises(ValueError, match="precision 'auto'.*resolve"):
    image_features.build_feature_extractor(config_lib.EncoderConfig(backbone_weights=None, image_size=32))


# --- Features do not depend on the batch ---

def _photos(count):
  """`count` distinct 500x375 JPEGs of noise (Flickr8k's size)."""
  rng = np.random.default_rng(7)
  return [tf.io.encode_jpeg(rng.integers(0, 256, [375, 500, 3], dtype=np.uint8)).numpy() for _ in range(count)]


@pytest.fixture(scope='module')
def photos():
  return _photos(backbone_handler.DEFAULT_BATCH_SIZE + 4)


@pytest.mark.parametrize('precision', PRECISIONS)
def test_fc2_features_do_not_depend_on_the_batch(precision, photos, tmp_path):
  """VGG16 fc2 at 224 px, the real-data encoder: one image alone, at position 0 and 17 of a
  full batch, and in a final short batch gets the same bits, in the feature pass's handler
  and in the graph the exporter and the parity check trace around the loaded backbone."""
  extractor, _ = feature_gen.build_encoder(
      config_lib.EncoderConfig(backbone_weights=None, pooling='fc2', precision=precision))
  features_artifact.save_backbone(extractor, features_artifact.backbone_dir(str(tmp_path)))
  handler = backbone_handler.BackboneHandler(features_artifact.backbone_dir(str(tmp_path)))
  model = handler.load_model()

  def run(batch):
    return np.stack([result.inference for result in handler.run_inference(batch, model)])

  size = backbone_handler.DEFAULT_BATCH_SIZE
  lone, others = photos[0], photos[1:]
  first = run(photos[:size])  # lone at position 0
  at_17 = run(others[:17] + [lone] + others[17:size - 1])  # lone at 17, the others moved
  short_batch = others[size - 3:size + 3] + [lone]  # a final short batch of 7
  short = run(short_batch)
  alone = run([lone])
  np.testing.assert_array_equal(alone[0], first[0])
  np.testing.assert_array_equal(at_17[17], first[0])
  np.testing.assert_array_equal(short[-1], first[0])
  np.testing.assert_array_equal(np.concatenate([at_17[:17], at_17[18:]]), first[1:])
  np.testing.assert_array_equal(short[:2], first[size - 2:])  # others[i] is photos[i + 1]
  backbone = features_artifact.load_backbone(str(tmp_path))
  traced = tf.function(lambda images: image_features.encode_images(backbone, images),
                       input_signature=[tf.TensorSpec([None], tf.string)])
  np.testing.assert_array_equal(traced(tf.constant([lone])).numpy()[0], first[0])
  np.testing.assert_array_equal(traced(tf.constant(short_batch)).numpy(), short)


# --- The feature pass in bfloat16 ---

@pytest.fixture(scope='module')
def examples(tmp_path_factory):
  split = test_examples.captioned_images(num_images=12, image_size=40)
  ids = list(split)
  return test_examples.write_examples(
      tmp_path_factory.mktemp('examples') / 'examples',
      {names.TRAIN_SPLIT: {i: split[i] for i in ids[:8]}, names.EVAL_SPLIT: {i: split[i] for i in ids[8:10]},
       names.DEMO_SPLIT: {i: split[i] for i in ids[10:]}})


def _feature_pass(examples, out_dir, precision):
  encoder = config_lib.EncoderConfig(backbone_weights=None, image_size=32, pooling='avg', precision=precision)
  return executors.run_executor(
      feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class(executors.beam_context()),
      {'examples': examples}, {names.IMAGE_FEATURES_KEY: ImageFeatures},
      {**feature_gen.parameters(encoder, seed=0), 'batch_size': 4},
      out_dir)[names.IMAGE_FEATURES_KEY]


@pytest.fixture(scope='module')
def feature_passes(examples, tmp_path_factory):
  """precision -> the ImageFeatureGen's artifact (random VGG16, 32 px, avg) in that precision."""
  return {precision: _feature_pass(examples, tmp_path_factory.mktemp(precision), precision=precision)
          for precision in PRECISIONS}


def _compute_dtypes(model):
  """The compute dtypes of every layer of `model`, nested models included."""
  dtypes = set()
  for layer in model.layers:
    dtypes |= _compute_dtypes(layer) if hasattr(layer, 'layers') else {layer.compute_dtype}
  return dtypes


def test_bfloat16_feature_pass_records_its_precision_and_passes_parity(feature_passes):
  for precision, artifact in feature_passes.items():
    info = features_artifact.read_encoder_info(os.path.join(artifact.uri, names.ENCODER_FILE))
    assert info.precision == artifact.get_string_custom_property('precision') == precision
    assert artifact.get_int_custom_property(features_artifact.PARITY_PASSES_PROPERTY) == 12  # every image, exact
  # The saved backbone computes in bfloat16 (its preprocessing and its output in float32).
  loaded = features_artifact.load_backbone(feature_passes['bfloat16'].uri)
  assert _compute_dtypes(loaded) == {'float32', 'bfloat16'}
  assert loaded.get_layer('preprocess_input').compute_dtype == 'float32'
  assert _compute_dtypes(features_artifact.load_backbone(feature_passes['float32'].uri)) == {'float32'}


def test_bfloat16_features_are_close_to_float32_but_not_equal(feature_passes):
  by_precision = {p: features_artifact.read_features(a.uri, names.TRAIN_SPLIT) for p, a in feature_passes.items()}
  single, half = by_precision['float32'], by_precision['bfloat16']
  assert sorted(single) == sorted(half) and len(single) == 8
  for image_id in single:
    a, b = single[image_id], half[image_id]
    assert b.dtype == np.float32 and not np.array_equal(a, b), image_id
    assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999, image_id


def test_the_feature_pass_resolves_auto_on_its_machine_and_records_it(examples, tmp_path, monkeypatch):
  """'auto' is decided where the pass runs: on a machine without bfloat16 units it computes
  float32 features, and the artifact says so (what the Trainer and the summary read)."""
  monkeypatch.setattr(precision_lib, 'hardware_has_bfloat16', lambda *args: False)
  artifact = _feature_pass(examples, tmp_path, precision='auto')
  assert features_artifact.artifact_encoder_info(artifact.uri).precision == 'float32'
  assert artifact.get_string_custom_property('precision') == 'float32'


# --- The serving graph in bfloat16 ---

@pytest.fixture(scope='module')
def bfloat16_export(tmp_path_factory):
  """(export dir, saved backbone dir): the tiny captioner with a bfloat16 backbone, saved as
  the ImageFeatureGen saves it and loaded back as the Trainer does before exporting it."""
  pieces = tiny_model.build_tiny_captioner(precision='bfloat16')
  uri = str(tmp_path_factory.mktemp('image_features'))
  features_artifact.save_backbone(pieces.feature_extractor, features_artifact.backbone_dir(uri))
  export_dir = str(tmp_path_factory.mktemp('export') / 'serving_model')
  exporter.export_serving_model(export_dir, features_artifact.load_backbone(uri), pieces.decoder,
                                pieces.vocabulary, max_length=6, beam_width=2)
  return export_dir, features_artifact.backbone_dir(uri)


def _block_images():
  return [test_images.block_image(seed, (48, 40), 'JPEG') for seed in range(5)]


def test_serving_graph_reproduces_the_saved_bfloat16_backbone_exactly(bfloat16_export):
  export_dir, backbone_dir = bfloat16_export
  images = _block_images()
  handler = backbone_handler.BackboneHandler(backbone_dir)
  cached = np.stack([r.inference for r in handler.run_inference(images, handler.load_model())])
  loaded = tf.saved_model.load(export_dir)
  served = loaded.encode_images(tf.constant(images)).numpy()
  np.testing.assert_array_equal(served, cached)


_CAPTION_WITHOUT_ONEDNN = """
import json, sys
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
images = [open(path, 'rb').read() for path in sys.argv[2:]]
outputs = tf.saved_model.load(sys.argv[1]).signatures['serving_default'](images=tf.constant(images))
print(json.dumps({'onednn': _pywrap_util_port.IsMklEnabled(),
                  'captions': [c.decode() for c in outputs['caption'].numpy()],
                  'log_probabilities': outputs['log_probability'].numpy().tolist()}))
"""


def test_bfloat16_model_captions_in_stock_tensorflow_without_onednn(bfloat16_export, tmp_path):
  export_dir, _ = bfloat16_export
  paths = []
  for index, image in enumerate(_block_images()):
    paths.append(str(tmp_path / f'{index}.jpg'))
    with open(paths[-1], 'wb') as f:
      f.write(image)
  env = {**os.environ, 'TF_ENABLE_ONEDNN_OPTS': '0', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  completed = subprocess.run([sys.executable, '-c', _CAPTION_WITHOUT_ONEDNN, export_dir, *paths],
                             env=env, capture_output=True, text=True, timeout=300)
  assert completed.returncode == 0, completed.stderr[-3000:]
  answer = json.loads(completed.stdout.strip().splitlines()[-1])
  assert answer['onednn'] is False
  assert len(answer['captions']) == len(paths)
  assert all(set(caption.split()) <= set(tiny_model.WORDS) and caption for caption in answer['captions'])
  assert all(np.isfinite(answer['log_probabilities'])) and max(answer['log_probabilities']) < 0


# --- The flag, shared by both runners, and the pipeline's resolved parameter ---

def test_the_flag_reaches_the_feature_pass_unresolved():
  """The pipeline carries the flag as given, 'auto' included: the machine that builds the
  pipeline is not the one that runs the backbone."""
  parser = argparse.ArgumentParser()
  settings.add_arguments(parser)
  assert settings.encoder_config(parser.parse_args([]), config_lib.EncoderConfig()).precision == 'auto'
  for flag in ('auto', 'float32', 'bfloat16'):
    encoder = settings.encoder_config(parser.parse_args(['--backbone_precision', flag]),
                                      config_lib.EncoderConfig())
    parameters = executors.node_parameters(names.FEATURE_GEN, encoder_config=encoder)
    assert config_lib.from_json(config_lib.EncoderConfig, parameters['encoder']).precision == flag
  with pytest.raises(SystemExit):
    parser.parse_args(['--backbone_precision', 'float16'])


