"""The frozen backbone's arithmetic precision, and what 'auto' means on this machine.

bfloat16 keeps float32's exponent range with an 8-bit mantissa; for a frozen
CNN whose features feed a trained decoder that is plenty (VGG16 fc2's features
under Keras' `mixed_bfloat16` policy stay close to float32's), and on hardware
with bfloat16 units it runs several times faster (figures: bench/precision.py,
docs/benchmarks.md; why: docs/design-notes/precision-and-determinism.md). Without such units
bfloat16 is emulated and slower, so 'auto' picks it only where the hardware
has them:
  GPU visible: every GPU of compute capability >= 8.0 (Ampere and later);
  CPU only:    the `amx_bf16` or `avx512_bf16` flag in /proc/cpuinfo (oneDNN,
               TensorFlow's CPU kernels, uses those instructions).

'auto' is resolved by the ImageFeatureGen on the machine that runs it, which
records the resolved value in its artifact; the Trainer reads it from there
(see components/encoder/feature_gen.py).
"""
from typing import Optional

import tensorflow as tf

from components import config as config_lib

FLOAT32, BFLOAT16 = config_lib.RESOLVED_PRECISIONS
# The Keras mixed-precision policy each resolved precision builds the backbone under:
# weights stay float32, the layers compute in the policy's compute dtype.
KERAS_POLICIES = {FLOAT32: 'float32', BFLOAT16: 'mixed_bfloat16'}
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix arithmetic.
BFLOAT16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')
# Compute capability from which NVIDIA GPUs have bfloat16 tensor cores.
BFLOAT16_GPU_CAPABILITY = (8, 0)
_CPUINFO = '/proc/cpuinfo'


def cpu_flags(cpuinfo_path: str = _CPUINFO) -> frozenset:
  """The CPU's feature flags from /proc/cpuinfo; empty where there is no such file (not Linux)."""
  try:
    with open(cpuinfo_path) as f:
      return frozenset(word for line in f if line.startswith('flags') for word in line.split(':', 1)[1].split())
  except FileNotFoundError:
    return frozenset()


def hardware_has_bfloat16(cpuinfo_path: str = _CPUINFO) -> bool:
  """True where the backbone would run on native bfloat16 units (see the module docstring)."""
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    capabilities = [tf.config.experimental.get_device_details(gpu).get('compute_capability') for gpu in gpus]
    return all(c is not None and tuple(c) >= BFLOAT16_GPU_CAPABILITY for c in capabilities)
  return any(flag in cpu_flags(cpuinfo_path) for flag in BFLOAT16_CPU_FLAGS)


def resolve(precision: Optional[str], cpuinfo_path: str = _CPUINFO) -> str:
  """'auto' (or None) -> 'bfloat16' or 'float32' for this machine; an explicit precision as given.

  Raises:
    ValueError: naming the choices, for anything else.
  """
  precision = precision or config_lib.AUTO_PRECISION
  if precision not in config_lib.PRECISIONS:
    raise ValueError(f'Unknown precision {precision!r}; choose one of {config_lib.PRECISIONS}.')
  if precision != config_lib.AUTO_PRECISION:
    return precision
  return BFLOAT16 if hardware_has_bfloat16(cpuinfo_path) else FLOAT32
