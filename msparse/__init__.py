"""msparse: MeanSparse (Amini et al. 2024), reproduced and stress-tested.

    import msparse as ms
    model = ...                                   # any adversarially trained model
    sites = ms.sparsify(model, "activations")     # or a preset key, see ms.PRESETS
    ms.calibrate(model, train_images)             # per-channel statistics, α held at 0
    ms.set_alpha(model, 0.25)                     # switch the operators on
    ms.set_backward(model, "identity")            # BPDA, for an adaptive evaluation
"""

from .operator import MeanSparse
from .placement import Rule, Site, blocked_fractions, set_alpha, set_backward, set_centre, sites, sparsify, unsparsify
from .presets import PRESETS, Preset
from .stats import calibrate

__version__ = "0.1.0"

__all__ = ["MeanSparse", "sparsify", "calibrate", "set_alpha", "set_backward", "PRESETS",
           "Preset", "Rule", "Site", "sites", "unsparsify", "set_centre", "blocked_fractions"]
