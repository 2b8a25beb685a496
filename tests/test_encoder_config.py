"""Every encoder default is written once, in config_lib.EncoderConfig, and the
config crosses into the ImageFeatureGen whole.

The flags, the ImageFeatureGen's parameter as the pipeline builds it and the
feature extractor all take the encoder's settings from there; a default
written a second time anywhere makes one of these fail.
"""
import argparse
import dataclasses
import inspect

from components import config as config_lib
from components import names
from components.encoder import feature_gen
from components.encoder import image_features
from pipeline import settings
from testing import executors

DEFAULTS = config_lib.EncoderConfig()


def _flags(*argv):
  parser = argparse.ArgumentParser()
  settings.add_arguments(parser)
  return parser.parse_args(list(argv))


def test_the_flags_left_alone_give_the_encoder_defaults():
  assert settings.encoder_config(_flags(), DEFAULTS) == DEFAULTS
  assert settings.encoder_config(_flags('--backbone_weights', 'none'), DEFAULTS) == dataclasses.replace(
      DEFAULTS, backbone_weights=None)
  assert settings.encoder_config(_flags('--pooling', 'avg', '--image_size', '96'), DEFAULTS) == (
      dataclasses.replace(DEFAULTS, pooling='avg', image_size=96))
  assert settings.trainer_config(_flags('--augment'), config_lib.TrainerConfig()).augment


def test_the_runner_default_weights_are_the_runners():
  embedded = config_lib.EMBEDDED_ENCODER
  assert settings.encoder_config(_flags(), embedded).backbone_weights is None
  assert settings.encoder_config(_flags('--backbone_weights', 'imagenet'), embedded).backbone_weights == 'imagenet'


def test_the_feature_pass_gets_the_whole_encoder_config_unresolved():
  parameters = executors.node_parameters(names.FEATURE_GEN)
  assert config_lib.from_json(config_lib.EncoderConfig, parameters['encoder']) == DEFAULTS
  assert parameters == {key: value for key, value in feature_gen.parameters(DEFAULTS, seed=0).items()
                        if value is not None}


def test_no_component_or_function_has_an_encoder_default_of_its_own():
  spec = feature_gen.ImageFeatureGen.SPEC_CLASS.PARAMETERS
  assert not spec['encoder'].optional
  signature = inspect.signature(image_features.build_feature_extractor)
  assert [p.default for p in signature.parameters.values()] == [inspect.Parameter.empty]
  trainer_fields = {field.name for field in dataclasses.fields(config_lib.TrainerConfig)}
  encoder_fields = {field.name for field in dataclasses.fields(config_lib.EncoderConfig)}
  # The Trainers read the augmentation switch and, for the baseline, an image size only.
  assert trainer_fields & encoder_fields == {'image_size'}


def test_the_image_size_defaults_to_the_backbones_own():
  for backbone, size in config_lib.BACKBONE_IMAGE_SIZES.items():
    assert config_lib.EncoderConfig(backbone=backbone).input_size == size
    assert config_lib.EncoderConfig(backbone=backbone, image_size=64).input_size == 64
  assert sorted(image_features.BACKBONES) == sorted(config_lib.BACKBONE_IMAGE_SIZES)


def test_configs_round_trip_through_their_component_parameters():
  for config in (config_lib.TrainerConfig(), config_lib.EMBEDDED_TRAINER):
    assert config_lib.from_custom_config(config_lib.TrainerConfig, config_lib.to_custom_config(config)) == config
  for cls, config in ((config_lib.EncoderConfig, config_lib.EMBEDDED_ENCODER),
                      (config_lib.EvaluationConfig, config_lib.EMBEDDED_EVALUATION)):
    assert config_lib.from_json(cls, config_lib.to_json(config)) == config


def test_every_threshold_has_its_flag():
  defaults = config_lib.EvaluationConfig()
  for field in dataclasses.fields(config_lib.EvaluationConfig):
    given = settings.evaluation_config(_flags(f'--{field.name}', '0.5'), defaults)
    assert given == dataclasses.replace(defaults, **{field.name: 0.5})
  assert settings.evaluation_config(_flags(), defaults) == defaults
