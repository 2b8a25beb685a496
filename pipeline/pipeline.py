"""The captioner pipeline: one pure factory used by every runner.

`create_pipeline` takes every environment-specific value as an argument and
does no I/O and no hardware probing: the local and Kubeflow runners build
those values (a weights file's digest included) and call it, and choices that
depend on hardware ('auto' precisions) travel unresolved to the component that
runs on that hardware.
"""
from typing import Any, List, Mapping, Optional, Sequence

from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components import names
from components.encoder import feature_gen as feature_gen_lib
from components.encoder.feature_gen import ImageFeatureGen
from components.evaluation.caption_evaluator import CaptionEvaluator
from components.ingestion.example_gen import ImageCaptionExampleGen
from components.evaluation.gallery import DemoGallery
from components.training.trainer_component import CaptionTrainer
from components import config as config_lib


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    schema_path: str,
    serving_model_dir: str,
    transform_config: config_lib.TransformConfig,
    encoder_config: config_lib.EncoderConfig,
    trainer_config: config_lib.TrainerConfig,
    baseline_config: config_lib.TrainerConfig,
    evaluation_config: config_lib.EvaluationConfig,
    metadata_connection_config: Optional[tfx.orchestration.metadata.ConnectionConfigType] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    node_beam_pipeline_args: Optional[Mapping[str, Sequence[str]]] = None,
    node_platform_configs: Optional[Mapping[str, Any]] = None,
    enable_cache: bool = True,
    resolve_last_blessed_model: bool = True,
    restval_split: str = names.DEFAULT_RESTVAL_SPLIT,
    backbone_weights_sha256: Optional[str] = None,
) -> tfx.dsl.Pipeline:
  """Builds the captioner pipeline.

  Args:
    pipeline_name: name of the pipeline in ML Metadata.
    pipeline_root: where component outputs are written.
    data_root: a dataset folder in a layout of components/ingestion/layouts.py.
    schema_path: the curated raw-data schema (`schemas/schema.pbtxt`).
    serving_model_dir: the TF Serving base directory the Pusher writes
      versions into (`<serving_model_dir>/<version>/`).
    transform_config, encoder_config, trainer_config, baseline_config,
      evaluation_config: the Transform's, the frozen backbone's, the
      captioner's, the captions-only baseline's and the blessing's settings.
    metadata_connection_config: ML Metadata store; None on Kubeflow, which
      brings its own.
    beam_pipeline_args: Beam options for the Beam-backed components.
    node_beam_pipeline_args: node id -> Beam options for that node, after
      (so overriding) `beam_pipeline_args` (pipeline/beam_args.py builds them).
    node_platform_configs: node id -> the orchestrator's platform config for
      that node (e.g. Kubeflow's container ResourceSpec with a GPU).
    enable_cache: reuse outputs of components whose inputs did not change.
    resolve_last_blessed_model: look up the last blessed captioner so a new one
      must not regress against it. Open-source Kubeflow Pipelines cannot run
      TFX resolver nodes; there the gate uses the absolute thresholds only.
    restval_split: the split Karpathy's 'restval' images go to.
    backbone_weights_sha256: sha256 of `encoder_config`'s weights file
      (feature_gen.weights_file_digest, computed by the runner), None for
      'imagenet' or random weights.
  """
  config_lib.check_decoder(encoder_config, trainer_config)
  example_gen, statistics_gen, schema_gen, example_validator, transform = _data_nodes(
      data_root, schema_path, transform_config, restval_split)
  # The frozen backbone once per image of every split, and the backbone itself. Its
  # inputs are the examples and the encoder settings only, so retraining reuses it.
  feature_gen = ImageFeatureGen(
      examples=example_gen.outputs['examples'],
      **feature_gen_lib.parameters(encoder_config, trainer_config.seed, backbone_weights_sha256)
  ).with_id(names.FEATURE_GEN)
  trainer, baseline_trainer = _trainers(transform, schema_gen, feature_gen, trainer_config,
                                        baseline_config)
  resolver, evaluator, pusher, gallery = _evaluation_nodes(
      example_gen, feature_gen, trainer, baseline_trainer, serving_model_dir, evaluation_config,
      resolve_last_blessed_model)
  components = [c for c in (example_gen, statistics_gen, schema_gen, example_validator, transform,
                            feature_gen, trainer, baseline_trainer, resolver, evaluator, pusher,
                            gallery) if c]
  _set_per_node(components, node_beam_pipeline_args, node_platform_configs)
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=components,
      enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [])


def _data_nodes(data_root: str, schema_path: str, transform_config: config_lib.TransformConfig,
                restval_split: str) -> tuple:
  """ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator and Transform."""
  # Reads the dataset folder once into train/eval/demo TFRecords + a reject report.
  example_gen = ImageCaptionExampleGen(
      input_base=data_root, restval_split=restval_split).with_id(names.EXAMPLE_GEN)
  # Per-split statistics of the raw examples.
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs['examples']).with_id(names.STATISTICS_GEN)
  # The checked-in schema; SchemaGen only drafted it.
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path).with_id(names.SCHEMA_GEN)
  # Flags statistics that break the schema (missing captions, several images per example).
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema']).with_id(names.EXAMPLE_VALIDATOR)
  # Vocabulary and padding in the graph; learned on train, applied to train and eval.
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=names.PREPROCESSING_FN,
      splits_config=transform_pb2.SplitsConfig(
          analyze=[names.TRAIN_SPLIT], transform=[names.TRAIN_SPLIT, names.EVAL_SPLIT]),
      custom_config=config_lib.to_custom_config(transform_config)).with_id(names.TRANSFORM)
  return example_gen, statistics_gen, schema_gen, example_validator, transform


def _trainers(transform, schema_gen, feature_gen, trainer_config: config_lib.TrainerConfig,
              baseline_config: config_lib.TrainerConfig) -> tuple:
  """The captioner's Trainer and the captions-only baseline's."""
  # The Show-and-Tell captioner, trained from the cached features (or on the fly with
  # augmentation), exported with the caption signatures and the backbone inside.
  trainer = _trainer(transform, schema_gen, trainer_config,
                     feature_gen.outputs[names.IMAGE_FEATURES_KEY]).with_id(names.CAPTION_TRAINER)
  # The captions-only language model: the baseline the captioner must beat (reads no image).
  baseline_trainer = _trainer(transform, schema_gen, baseline_config).with_id(names.BASELINE_TRAINER)
  return trainer, baseline_trainer


def _evaluation_nodes(example_gen, feature_gen, trainer, baseline_trainer, serving_model_dir: str,
                      evaluation_config: config_lib.EvaluationConfig,
                      resolve_last_blessed_model: bool) -> tuple:
  """The last blessed model's resolver (or None), the evaluator, the Pusher and the gallery."""
  # The last blessed captioner, which a new one must not fall behind.
  resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id(names.LATEST_BLESSED_MODEL_RESOLVER) if resolve_last_blessed_model else None
  # Caption metrics and diversity on eval for captioner and baseline, and the blessing (from
  # the cached features, once the model's encoder weights match theirs by fingerprint).
  evaluator = CaptionEvaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline_trainer.outputs['model'],
      last_blessed_model=resolver.outputs['model'] if resolver else None,
      image_features=feature_gen.outputs[names.IMAGE_FEATURES_KEY],
      split=names.EVAL_SPLIT,
      thresholds=config_lib.to_json(evaluation_config),
  ).with_id(names.CAPTION_EVALUATOR)
  # Copies a blessed model into the directory TF Serving watches.
  pusher = tfx.components.Pusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
  ).with_id(names.PUSHER)
  # The demo split captioned by the pushed model (and the baseline), scored, as a static HTML page.
  gallery = DemoGallery(
      examples=example_gen.outputs['examples'],
      pushed_model=pusher.outputs['pushed_model'],
      model=trainer.outputs['model'],
      baseline_model=baseline_trainer.outputs['model'],
      evaluation=evaluator.outputs['evaluation'],
      image_features=feature_gen.outputs[names.IMAGE_FEATURES_KEY],
      split=names.DEMO_SPLIT,
  ).with_id(names.DEMO_GALLERY)
  return resolver, evaluator, pusher, gallery


def _set_per_node(components: Sequence[Any],
                  node_beam_pipeline_args: Optional[Mapping[str, Sequence[str]]],
                  node_platform_configs: Optional[Mapping[str, Any]]) -> None:
  """Gives the named nodes their Beam options and platform configs, before the Pipeline exists."""
  nodes = {c.id: c for c in components}
  for node_id, args in _named_nodes(nodes, node_beam_pipeline_args, 'with_beam_pipeline_args'):
    nodes[node_id].with_beam_pipeline_args(list(args))
  for node_id, config in _named_nodes(nodes, node_platform_configs, 'with_platform_config'):
    nodes[node_id].with_platform_config(config)


def _named_nodes(nodes: Mapping[str, Any], per_node: Optional[Mapping[str, Any]],
                 method: str) -> List[tuple]:
  """The (node id, value) pairs of `per_node`, checked against the nodes that have `method`.

  Raises:
    ValueError: naming the ids that are not nodes of the pipeline with `method`.
  """
  per_node = per_node or {}
  unknown = sorted(node_id for node_id in per_node
                   if not hasattr(nodes.get(node_id), method))
  if unknown:
    eligible = sorted(node_id for node_id, node in nodes.items() if hasattr(node, method))
    raise ValueError(f'Per-node settings name {unknown}, which are not nodes of the pipeline '
                     f'with {method} ({eligible}).')
  return list(per_node.items())


def _trainer(transform, schema_gen, trainer_config: config_lib.TrainerConfig,
             image_features_channel=None) -> CaptionTrainer:
  """A Trainer on the Transform output; captioner and baseline differ in config and features."""
  return CaptionTrainer(
      run_fn=names.RUN_FN,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=tfx.proto.TrainArgs(splits=[names.TRAIN_SPLIT]),
      eval_args=tfx.proto.EvalArgs(splits=[names.EVAL_SPLIT]),
      custom_config=config_lib.to_custom_config(trainer_config),
      image_features=image_features_channel)
