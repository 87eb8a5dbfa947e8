"""lightning_gen: deep-learning techniques as Lightning modules, one technique per module.

Listing `lightning_gen/*.py` lists the techniques (plus `losses.py`, the pure loss functions). The support code
lives in sub-packages: `core/` (the technique skeleton, protocols, checks, runs, sampling, optimizers,
distributed helpers, loggers, the CLI), `callbacks/`, `metrics/` and `nn/` (networks shared by techniques).
"""

import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys as _sys
import warnings as _warnings

from lightning_gen.a2c import A2C
from lightning_gen.cgan import CGAN
from lightning_gen.char_lstm import CharLSTM
from lightning_gen.classifier import Classifier
from lightning_gen.dcgan import DCGAN
from lightning_gen.deepdream import DeepDream
from lightning_gen.explain import Explain
from lightning_gen.fast_style import FastStyleTransfer
from lightning_gen.gcn import GCN
from lightning_gen.m2vae import M2VAE
from lightning_gen.maml import MAML
from lightning_gen.one_class import DOC, DeepSVDD
from lightning_gen.pix2pix import Pix2Pix
from lightning_gen.sgan import SGAN
from lightning_gen.siamese import Siamese
from lightning_gen.srcnn import SRCNN
from lightning_gen.srgan import SRGAN
from lightning_gen.srresnet import SRResNet
from lightning_gen.style_transfer import StyleTransfer
from lightning_gen.text_classifier import TextClassifier
from lightning_gen.triplet import Triplet
from lightning_gen.vae import CVAE, VAE

__all__ = [
    "A2C", "CGAN", "CharLSTM", "Classifier", "CVAE", "DCGAN", "DeepDream", "DeepSVDD", "DOC", "Explain",
    "FastStyleTransfer", "GCN", "M2VAE", "MAML", "Pix2Pix", "SGAN", "Siamese", "SRCNN", "SRGAN", "SRResNet",
    "StyleTransfer", "TextClassifier", "Triplet", "VAE",
]
__version__ = "0.1.0"

# Module paths of release 0.1 that moved into sub-packages. Configs and imports that name them keep working for
# one more release (`class_path: lightning_gen.loggers.AutoWandbLogger` still resolves, with a DeprecationWarning);
# new code uses the new paths. They are imported only when asked for. tests/test_layout.py checks every entry.
MOVED_MODULES = {
    "lightning_gen.checks": "lightning_gen.core.checks",
    "lightning_gen.cli": "lightning_gen.core.cli",
    "lightning_gen.cpu": "lightning_gen.core.cpu",
    "lightning_gen.distributed": "lightning_gen.core.distributed",
    "lightning_gen.loggers": "lightning_gen.core.loggers",
    "lightning_gen.optim": "lightning_gen.core.optim",
    "lightning_gen.runs": "lightning_gen.core.runs",
    "lightning_gen.sampling": "lightning_gen.core.sampling",
    "lightning_gen.sr_metrics": "lightning_gen.metrics.sr",
}


class _MovedModuleFinder(_importlib_abc.MetaPathFinder, _importlib_abc.Loader):
    """Resolves an old module path to the module at its new path (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED_MODULES:
            return _importlib_util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        _warnings.warn(f"{spec.name} moved to {MOVED_MODULES[spec.name]}; the old path goes in the next release.",
                       DeprecationWarning, stacklevel=2)
        return _importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass  # the new module is already imported


if not any(isinstance(finder, _MovedModuleFinder) for finder in _sys.meta_path):
    _sys.meta_path.append(_MovedModuleFinder())
