"""The PyTorch ViTs we compare against (Hugging Face transformers, timm), importable on CPU.

PyTorch is optional: only conversion-parity tests and benchmarks import this module.

timm needs torchvision, and transformers imports it too when it is installed. On these
machines torch is the CPU build, and the only torchvision wheel for it on PyPI is the CUDA
build. Its C++ extension then cannot load, and `import torchvision` fails: its
_meta_registrations module registers fake kernels for the `torchvision::nms` and `qnms`
operators, which only the extension defines. A ViT uses none of torchvision's operators.
So when the extension is missing, `import_torch()` declares those two operator schemas
(signatures only, no kernels) first. torchvision's pure-Python parts then import, and any
real use of those operators still fails loudly.

Where pip's torch is the CUDA build (Python 3.10 and 3.12 here, Colab), it brings Triton,
and importing Triton after TensorFlow kills the process with a segmentation fault
(tensorflow-cpu 2.21, triton 3.7.1; the other order works). The peers run on the CPU and
need no Triton, so in a process that has imported TensorFlow, `import_torch()` makes
`import triton` an ImportError first, which torch treats as Triton not installed.
"""

import importlib.util
import sys


def _declare_missing_torchvision_ops(torch):
  spec = importlib.util.find_spec('torchvision')
  if spec is None or getattr(_declare_missing_torchvision_ops, 'done', False):
    return
  try:
    torch.ops.torchvision.nms  # pylint: disable=pointless-statement
    return  # the extension is loaded (or another import declared them)
  except (AttributeError, RuntimeError):
    pass
  import os  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(spec.origin)
  for lib in glob.glob(os.path.join(root, '_C*.so')):
    try:
      torch.ops.load_library(lib)
      return
    except (OSError, RuntimeError):
      pass  # CUDA build against a CPU torch: declare the schemas below
  lib = torch.library.Library('torchvision', 'DEF')  # pylint: disable=unused-variable
  lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  _declare_missing_torchvision_ops.lib = lib  # keep the registration alive
  _declare_missing_torchvision_ops.done = True


def import_torch():
  """`torch`, with torchvision made importable (see the module docstring).

  Raises ImportError naming the install command when PyTorch is absent."""
  if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
    sys.modules['triton'] = None  # see the module docstring
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'PyTorch is not installed; it is only needed for PyTorch checkpoints (.pth/.bin) '
        'and the PyTorch comparisons. Install the CPU build: pip install torch==2.13.0 '
        '--index-url https://download.pytorch.org/whl/cpu (or pip install -r '
        'requirements-test.txt).') from e
  _declare_missing_torchvision_ops(torch)
  return torch


def import_transformers():
  import_torch()
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers


def import_timm():
  import_torch()
  import timm  # pylint: disable=g-import-not-at-top
  return timm
