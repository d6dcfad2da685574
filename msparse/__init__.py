"""msparse: MeanSparse (Amini et al. 2024), reproduced and stress-tested.

    import msparse as ms
    model = ms.load_model()                       # the shipped robust CIFAR-10 ResNet-18 (offline)
    sites = ms.sparsify(model, "activations")     # or a preset key, see ms.PRESETS
    ms.calibrate(model, train_images)             # per-channel statistics, α held at 0
    ms.set_alpha(model, 0.25)                     # switch the operators on
    ms.set_backward(model, "identity")            # BPDA, for an adaptive evaluation
    result = ms.evaluate(model, x, y, attack="apgd-ce")

The package reads like the data flow: :mod:`msparse.data` and :mod:`msparse.models` (what goes in),
:mod:`msparse.core` (the operator, its placement and statistics), :mod:`msparse.attacks`,
:mod:`msparse.evaluation` (numbers, records, significance), :mod:`msparse.training`, :mod:`msparse.report`
(reference values, verdicts, figures); :mod:`msparse.cli` and :mod:`msparse.book` drive them, and
:mod:`msparse.errors` holds the one error hierarchy. Everything beyond the names below is imported from its
module (e.g. ``from msparse.core.placement import set_centre``).
"""

from ._compat import alias_autoattack as _alias_autoattack

_alias_autoattack()   # robustbench imports `autoattack`; pyautoattack installs `pyautoattack` (see _compat)

from .core.calibration import calibrate  # noqa: E402
from .core.operator import MeanSparse  # noqa: E402
from .core.placement import set_alpha, set_backward, sparsify  # noqa: E402
from .core.presets import PRESETS  # noqa: E402
from .data.loading import load_data  # noqa: E402
from .evaluation.evaluate import Result, evaluate  # noqa: E402
from .evaluation.significance import mcnemar, wilson  # noqa: E402
from .evaluation.queries import load_records, to_table  # noqa: E402
from .evaluation.store import Store  # noqa: E402
from .evaluation.sweep import Sweep, sweep  # noqa: E402
from .models.registry import list_models, load_model  # noqa: E402
from .training.config import TrainConfig  # noqa: E402

from ._version import __version__  # noqa: E402

__all__ = [
    # the core
    "MeanSparse", "sparsify", "calibrate", "set_alpha", "set_backward", "PRESETS",
    # data and models
    "load_data", "load_model", "list_models",
    # evaluation and results
    "evaluate", "sweep", "Result", "Sweep", "Store", "load_records", "to_table", "wilson", "mcnemar",
    # training
    "TrainConfig",
]
