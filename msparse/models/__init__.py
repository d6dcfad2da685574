"""Models: the CIFAR ResNet-18 family and the registry that decides what a model name means.

* :mod:`~msparse.models.front` -- the one front door for names: :func:`resolve` (``name -> (model, default
  placement)``), also ``random:<name>`` and checkpoint files; every caller that loads a model by name uses it.
* :mod:`~msparse.models.registry` -- ``load_model`` / ``list_models`` and the table of entries behind them.
* :mod:`~msparse.models.zoo` -- the entries: the shipped default, the standard-trained control, the shipped
  appendix family, the family name pattern, RobustBench's zoo.
* :mod:`~msparse.models.checkpoints` -- reading weights and the model card beside them.
* :mod:`~msparse.models.resnet` -- the ResNet-18 family itself (six activations, ANCRA's reverse attention).

``msparse.load_model`` and ``msparse.list_models`` are the registry's two functions.
"""
from . import zoo  # noqa: F401  (registers the entries)
from .front import RANDOM_PREFIX, default_placement, resolve  # noqa: F401  (the front door)
