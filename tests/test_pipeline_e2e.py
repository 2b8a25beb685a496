"""End to end: the local runner with its real blessing gate, on datasets where the gate must pass and must fail.

The whole pipeline runs with LocalDagRunner and SQLite ML Metadata, exactly as
`bash run.sh pipeline` runs it, with the thresholds the local runner blesses
the embedded dataset's captioner with (config_lib.EMBEDDED_EVALUATION:
BLEU-4, CIDEr-D, and twice the captions-only baseline's BLEU-4). The data are
small enough for a test (testing/colour_dataset.py: 96 images at 32 px whose
captions name the image's colour, which a tiny captioner learns in a few
epochs; the embedded shapes need the main job's minutes). Three runs into one
output folder, each a fixture on top of the one before:

  1. captions that follow the image: the captioner clears the gate, is pushed
     and captions image bytes;
  2. the same with one more epoch: everything up to the Trainers is reused from
     the cache, the backbone features too, and no node runs the backbone;
  3. captions that ignore the image (every image has the same five): the
     captioner cannot beat the baseline, every node runs again, and no new
     version reaches the serving directory.
"""
import collections
import json
import os

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components import config as config_lib
from components import names
from components.encoder import features_artifact
from components.encoder import parity
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.ingestion import flickr8k
from pipeline.local import run as local_run
from pipeline.local import runner as local_runner
from testing import colour_dataset
from testing import metadata

_GATE = config_lib.EMBEDDED_EVALUATION
_EPOCHS = 30
# Adam at 5e-4: at the real-data default's 1e-3 the one-epoch-longer rerun can
# fall more than the gate's max_regression behind the first run's captioner.
_TINY_RUN = ['--backbone_weights', 'none', '--pooling', 'flatten', '--image_size', '32', '--lstm_units', '32',
             '--epochs', str(_EPOCHS), '--learning_rate', '5e-4',
             '--batch_size', '8', '--beam_width', '2', '--beam_workers', '1',
             '--min_bleu4', str(_GATE.min_bleu4), '--min_cider', str(_GATE.min_cider),
             '--min_baseline_ratio', str(_GATE.min_baseline_ratio),
             '--min_distinct_caption_share', str(_GATE.min_distinct_caption_share)]
_NUM_IMAGES = 16 * len(colour_dataset.PALETTE)  # colour_dataset.write's default 16 blocks
# Every node of the pipeline (pipeline/pipeline.py).
_NODES = {names.EXAMPLE_GEN, names.STATISTICS_GEN, names.SCHEMA_GEN, names.EXAMPLE_VALIDATOR, names.TRANSFORM,
          names.FEATURE_GEN, names.CAPTION_TRAINER, names.BASELINE_TRAINER, names.LATEST_BLESSED_MODEL_RESOLVER,
          names.CAPTION_EVALUATOR, names.PUSHER, names.DEMO_GALLERY}


def _executions_per_node(output_dir, state):
  """Node id -> number of its executions in `state` (COMPLETE ran, CACHED reused)."""
  store = metadata_store.MetadataStore(local_run.RunOutputs(output_dir).connection_config)
  counts = {}
  for context in store.get_contexts_by_type('node'):
    node_id = context.name.split('.', 1)[1]
    counts[node_id] = sum(e.last_known_state == state
                          for e in store.get_executions_by_context(context.id))
  return counts


def _run(output_dir, data_dir, flags=()):
  """Runs the pipeline; returns (node ids that ran, node ids reused from the cache, the summary,
  node id -> backbone passes)."""
  ran_before = _executions_per_node(output_dir, metadata_store_pb2.Execution.COMPLETE)
  reused_before = _executions_per_node(output_dir, metadata_store_pb2.Execution.CACHED)
  assert local_runner.main(['--output_dir', output_dir, '--data_dir', data_dir] + _TINY_RUN + list(flags)) == 0
  ran = _executions_per_node(output_dir, metadata_store_pb2.Execution.COMPLETE)
  reused = _executions_per_node(output_dir, metadata_store_pb2.Execution.CACHED)
  with open(local_run.RunOutputs(output_dir).summary_path) as f:
    summary = json.load(f)
  return ({node for node in ran if ran[node] > ran_before.get(node, 0)},
          {node for node in reused if reused[node] > reused_before.get(node, 0)}, summary,
          _backbone_passes(output_dir))


def _backbone_passes(output_dir):
  """Node id -> images its latest execution ran through the backbone, from ML Metadata."""
  store = metadata_store.MetadataStore(local_run.RunOutputs(output_dir).connection_config)
  counters = {names.FEATURE_GEN: (names.BACKBONE_PASSES_PROPERTY, features_artifact.PARITY_PASSES_PROPERTY),
              names.CAPTION_EVALUATOR: (names.BACKBONE_PASSES_PROPERTY,),
              names.DEMO_GALLERY: (names.BACKBONE_PASSES_PROPERTY,)}
  return {node: sum(metadata.output_count(store, metadata.latest_execution(store, node), name) for name in properties)
          for node, properties in counters.items()}


def _versions(output_dir):
  """The version folders in the serving directory the Pusher writes into."""
  base = os.path.join(output_dir, 'serving', names.MODEL_NAME)
  return sorted(os.listdir(base)) if os.path.isdir(base) else []


@pytest.fixture(scope='module')
def output_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('run'))


@pytest.fixture(scope='module')
def colour_data(tmp_path_factory):
  """(dataset folder, image id -> colour_dataset.ColourImage) of captions that follow the image."""
  data_dir = str(tmp_path_factory.mktemp('colour_data'))
  return data_dir, colour_dataset.write(data_dir)


@pytest.fixture(scope='module')
def first_run(output_dir, colour_data):
  return _run(output_dir, colour_data[0])


@pytest.fixture(scope='module')
def rerun(first_run, output_dir, colour_data):
  versions_before = _versions(output_dir)
  return _run(output_dir, colour_data[0], ['--epochs', str(_EPOCHS + 1)]) + (versions_before,)


@pytest.fixture(scope='module')
def unpushable_run(rerun, output_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('colour_data_ignoring_the_image'))
  colour_dataset.write(data_dir, captions_follow_image=False)
  versions_before = _versions(output_dir)
  return _run(output_dir, data_dir) + (versions_before,)


def test_first_run_runs_every_node_and_pushes_the_blessed_captioner(first_run, output_dir):
  ran, reused, summary, _ = first_run
  assert ran == _NODES and not reused
  evaluation = summary['evaluation']
  assert evaluation['thresholds'] == config_lib.to_custom_config(_GATE)
  assert summary['pushed'] is True, evaluation['reasons']
  assert evaluation['blessed'] is True
  assert [reason.split(':')[0] for reason in evaluation['reasons']] == ['PASS'] * 4 + ['NOTE']
  captioner = evaluation['captioner']['metrics']
  baseline = evaluation['baseline']['metrics']
  assert captioner[caption_metrics.BLEU_4] >= _GATE.min_bleu4
  assert captioner[caption_metrics.CIDER_D] >= _GATE.min_cider
  assert captioner[caption_metrics.BLEU_4] >= _GATE.min_baseline_ratio * baseline[caption_metrics.BLEU_4]
  [version] = _versions(output_dir)
  assert summary['pushed_model'] == os.path.join(output_dir, 'serving', names.MODEL_NAME, version)


def test_pushed_model_names_the_colour_of_image_bytes(first_run, colour_data):
  summary = first_run[2]
  data_dir, written = colour_data
  demo = {image_id: image for image_id, image in written.items() if image.split == names.DEMO_SPLIT}
  images = []
  for image_id in demo:
    with open(os.path.join(data_dir, flickr8k.OFFICIAL_IMAGE_DIRS[0], image_id), 'rb') as f:
      images.append(f.read())
  evaluated = standard_artifacts.Model()
  evaluated.uri = summary['evaluation']['captioner']['model_uri']

  answer = captioning.SavedModelCaptioner(summary['pushed_model'])(images)

  # The Pusher pushed the model the gate blessed.
  assert answer == captioning.SavedModelCaptioner(captioning.serving_model_dir(evaluated))(images)
  named = [caption in image.captions for caption, image in zip(answer.captions, demo.values())]
  assert sum(named) >= 0.75 * len(demo), list(zip(answer.captions, (image.colour for image in demo.values())))


def test_summary_reports_ingestion_training_gallery_and_rejects(first_run):
  summary = first_run[2]
  assert os.path.isfile(summary['gallery'])
  assert os.path.isdir(summary['reject_report'])
  assert summary['ingestion']['reconciled'] is True
  assert summary['ingestion']['images']['total_written'] == _NUM_IMAGES
  captioner = summary['training']['captioner']
  # 12 colour and thing words, 9 shared ones ('a', 'picture', ...), the special tokens.
  assert captioner['vocabulary_size'] == 12 + 9 + len(names.SPECIAL_TOKENS)
  assert captioner['sequence_length'] == 6  # <start>, 4 words, <end>
  assert summary['training']['baseline']['config']['use_image'] is False


def test_the_first_run_runs_the_backbone_once_per_image_and_a_parity_sample(first_run, colour_data):
  *_, passes = first_run
  split_sizes = collections.Counter(image.split for image in colour_data[1].values())
  parity_passes = sum(min(parity.DEFAULT_PARITY_SAMPLE, count) for count in split_sizes.values())
  # The evaluator and the gallery caption from the cached features.
  assert passes == {names.FEATURE_GEN: _NUM_IMAGES + parity_passes, names.CAPTION_EVALUATOR: 0, names.DEMO_GALLERY: 0}


def test_an_epochs_only_rerun_reuses_the_features_and_runs_no_backbone(rerun):
  ran, reused, summary, passes, versions_before = rerun
  # New training settings: the Trainers and what follows them run again (the
  # first run's blessing is a new input to the evaluation); the features are reused.
  assert ran == {names.CAPTION_TRAINER, names.BASELINE_TRAINER, names.LATEST_BLESSED_MODEL_RESOLVER,
                 names.CAPTION_EVALUATOR, names.PUSHER, names.DEMO_GALLERY}
  assert reused == _NODES - ran
  assert passes == {names.FEATURE_GEN: 0, names.CAPTION_EVALUATOR: 0, names.DEMO_GALLERY: 0}
  # The new captioner and the last blessed one were both captioned from the cache.
  assert summary['evaluation']['last_blessed'] is not None
  assert summary['pushed'] is True, summary['evaluation']['reasons']
  assert len(versions_before) == 1


def test_captioner_that_cannot_beat_the_baseline_is_not_pushed(unpushable_run, rerun, output_dir):
  ran, reused, summary, _, versions_before = unpushable_run
  # New data: every node runs, the Pusher too; only the checked-in schema is the same.
  assert ran == _NODES - {names.SCHEMA_GEN} and reused == {names.SCHEMA_GEN}
  assert summary['pushed'] is False and summary['pushed_model'] is None
  assert len(versions_before) == 2 and _versions(output_dir) == versions_before
  evaluation = summary['evaluation']
  assert evaluation['blessed'] is False
  captioner_bleu4 = evaluation['captioner']['metrics'][caption_metrics.BLEU_4]
  baseline_bleu4 = evaluation['baseline']['metrics'][caption_metrics.BLEU_4]
  assert captioner_bleu4 < _GATE.min_baseline_ratio * baseline_bleu4
  assert (f'FAIL: BLEU-4 {captioner_bleu4:.4f} vs {_GATE.min_baseline_ratio:g} x captions-only baseline '
          f'{baseline_bleu4:.4f}') in evaluation['reasons']
  # The rerun's captioner (the last one blessed), re-scored on the new data.
  assert evaluation['last_blessed']['model_uri'] == rerun[2]['evaluation']['captioner']['model_uri']


def test_a_folder_that_is_not_flickr8k_fails_before_any_component_runs(tmp_path, capsys):
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'notes.txt').write_text('not a dataset')
  assert local_runner.main(['--data_dir', str(tmp_path / 'data'),
                            '--output_dir', str(tmp_path / 'out')]) == 2
  error = capsys.readouterr().err
  assert str(tmp_path / 'data') in error and 'Flickr8k.token.txt' in error
  assert not os.path.exists(local_run.RunOutputs(str(tmp_path / 'out')).metadata_path)
