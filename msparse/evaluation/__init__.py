"""Evaluation: attack a configuration, keep the numbers, and say how sure they are.

* :mod:`~msparse.evaluation.evaluate` -- ``evaluate``: one configuration under one attack, batch by batch,
  resumable, one record per point (:class:`~msparse.evaluation.evaluate.Result`).
* :mod:`~msparse.evaluation.sweep` -- ``sweep``: grids of configurations, each compared with the base model.
* :mod:`~msparse.evaluation.store` -- the results store: a folder of records, written atomically, read verified.
* :mod:`~msparse.evaluation.hashing` -- content hashes (record keys, data and weights) and per-image flag strings.
* :mod:`~msparse.evaluation.integrity` -- the record format: schema, checksum seal, numbers checked against flags.
* :mod:`~msparse.evaluation.provenance` -- commit, library versions and device of a record.
* :mod:`~msparse.evaluation.migration` -- records of older schemas, rewritten under their current key.
* :mod:`~msparse.evaluation.queries` -- a store's records as table rows, filtered (``load_records``, ``to_table``).
* :mod:`~msparse.evaluation.fingerprint` -- the architecture of a model, for the record key beside its weights.
* :mod:`~msparse.evaluation.evidence` -- every stored attack on one configuration's images pooled into the robust
  accuracy that stands, with the attack budget each side of a comparison received.
* :mod:`~msparse.evaluation.significance` -- Wilson intervals, exact McNemar and sign-flip tests, paired intervals,
  Holm's adjustment and the difference n images detect.
* :mod:`~msparse.evaluation.statsfile` -- the statistics file written by ``msparse calibrate``.
* :mod:`~msparse.evaluation.verify` -- recompute stored records under the running install, per example.

``msparse.evaluate``, ``msparse.sweep``, ``msparse.Store``, ... are exported by :mod:`msparse` itself.
"""
