"""msparse: MeanSparse (Amini et al. 2024), reproduced and stress-tested.

    import msparse as ms
    model = ...                                   # any adversarially trained model
    sites = ms.sparsify(model, "activations")     # or a preset key, see ms.PRESETS
    ms.calibrate(model, train_images)             # per-channel statistics, α held at 0
    ms.set_alpha(model, 0.25)                     # switch the operators on
    ms.set_backward(model, "identity")            # BPDA, for an adaptive evaluation
"""

from ._compat import alias_autoattack as _alias_autoattack

_alias_autoattack()   # robustbench imports `autoattack`; pyautoattack installs `pyautoattack` (see _compat)

from .data import DataInfo, load_data  # noqa: E402
from .evaluate import Result, Sweep, evaluate, site_subsets, sweep
from .models import list_models, load_model
from .operator import MeanSparse
from .placement import Rule, Site, blocked_fractions, set_alpha, set_backward, set_centre, sites, sparsify, unsparsify
from .presets import PRESETS, Preset
from .results import Store, load_records, mcnemar, to_table, wilson
from .stats import calibrate
from .train import TrainConfig  # the function is msparse.train.train (the name is the module's)

__version__ = "0.1.0"

__all__ = [
    # the core
    "MeanSparse", "sparsify", "calibrate", "set_alpha", "set_backward", "PRESETS",
    "Preset", "Rule", "Site", "sites", "unsparsify", "set_centre", "blocked_fractions",
    # data and models
    "load_data", "DataInfo", "load_model", "list_models", "TrainConfig",
    # evaluation and results
    "evaluate", "sweep", "Result", "Sweep", "site_subsets", "Store", "load_records", "to_table", "wilson",
    "mcnemar",
]
