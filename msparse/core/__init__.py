"""The core: the MeanSparse operator, where it goes in a model, and its statistics.

* :mod:`~msparse.core.operator` -- :class:`MeanSparse`, mean-centred sparsification of one site.
* :mod:`~msparse.core.placement` -- put operators into a model (``sparsify``), list them (``sites``,
  ``operators``), set α / centre / backward mode, remove them.
* :mod:`~msparse.core.presets` -- the paper's placement of every model it reports, as data (``PRESETS``).
* :mod:`~msparse.core.calibration` -- the statistics pass (``calibrate``).

The everyday names are exported by :mod:`msparse` itself (``msparse.sparsify``, ``msparse.calibrate``, ...).
"""
