"""Every encoder default is written once, in config_lib.EncoderConfig.

The flags, the ImageFeatureGen's parameters as the pipeline builds them, the
feature extractor and the Trainer's config all take the encoder's settings
from there; a default written a second time anywhere makes one of these fail.
"""
import argparse
import dataclasses
import inspect

from components import config as config_lib
from components import names
from components.encoder import feature_gen
from components.encoder import image_features
from components.encoder import precision as precision_lib
from pipeline import settings
from testing import executors

DEFAULTS = config_lib.EncoderConfig()
# The ImageFeatureGen's parameter for each EncoderConfig field it takes (augment happens in the Trainer).
_PARAMETERS = {'backbone': 'backbone', 'backbone_weights': 'backbone_weights', 'image_size': 'image_size',
               'pooling': 'pooling', 'precision': 'precision'}


def _flags(*argv):
  parser = argparse.ArgumentParser()
  settings.add_arguments(parser)
  return settings.trainer_config(parser.parse_args(list(argv)), config_lib.TrainerConfig())


def test_the_flags_left_alone_give_the_encoder_defaults():
  assert _flags().encoder == DEFAULTS
  assert _flags('--backbone_weights', 'none').encoder == dataclasses.replace(DEFAULTS, backbone_weights=None)
  assert _flags('--pooling', 'avg', '--image_size', '96', '--augment').encoder == dataclasses.replace(
      DEFAULTS, pooling='avg', image_size=96, augment=True)


def test_the_feature_pass_gets_the_encoder_defaults_resolved():
  parameters = executors.node_parameters(names.FEATURE_GEN)
  expected = dict(dataclasses.asdict(DEFAULTS), image_size=config_lib.BACKBONE_IMAGE_SIZES[DEFAULTS.backbone],
                  precision=precision_lib.resolve(DEFAULTS.precision))
  assert {parameter: parameters.get(parameter) for parameter in _PARAMETERS.values()} == {
      parameter: expected[field] for field, parameter in _PARAMETERS.items()}
  assert parameters == {key: value for key, value in feature_gen.parameters(DEFAULTS, seed=0).items()
                        if value is not None}


def test_no_component_or_function_has_an_encoder_default_of_its_own():
  spec = feature_gen.ImageFeatureGen.SPEC_CLASS.PARAMETERS
  # backbone_weights is optional only because TFX drops a None (random weights) parameter.
  assert [name for name in _PARAMETERS.values() if spec[name].optional] == ['backbone_weights']
  signature = inspect.signature(image_features.build_feature_extractor)
  assert [p.default for p in signature.parameters.values()] == [inspect.Parameter.empty]
  trainer_fields = {field.name for field in dataclasses.fields(config_lib.TrainerConfig)}
  assert not trainer_fields & {field.name for field in dataclasses.fields(config_lib.EncoderConfig)}


def test_the_image_size_defaults_to_the_backbones_own():
  for backbone, size in config_lib.BACKBONE_IMAGE_SIZES.items():
    assert config_lib.EncoderConfig(backbone=backbone).input_size == size
    assert config_lib.EncoderConfig(backbone=backbone, image_size=64).input_size == 64
  assert sorted(image_features.BACKBONES) == sorted(config_lib.BACKBONE_IMAGE_SIZES)


def test_the_trainer_config_round_trips_through_custom_config_with_its_encoder():
  for config in (config_lib.TrainerConfig(), config_lib.EMBEDDED_TRAINER):
    rebuilt = config_lib.from_custom_config(config_lib.TrainerConfig, config_lib.to_custom_config(config))
    assert rebuilt == config and isinstance(rebuilt.encoder, config_lib.EncoderConfig)
