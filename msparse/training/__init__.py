"""Adversarial training of the CIFAR ResNet-18 family (PGD-AT, TRADES, ANCRA), resumable.

* :mod:`~msparse.training.config` -- :class:`TrainConfig`, the recipe (paper appendix A.1 defaults).
* :mod:`~msparse.training.losses` -- the training losses (the inner attacks are :mod:`msparse.attacks.pgd`).
* :mod:`~msparse.training.loop` -- ``train``: epochs, held-out model selection, checkpoints, resume.
* :mod:`~msparse.training.metrics` -- clean / PGD / APGD-CE accuracies and the reverse-attention gate attacks.
* :mod:`~msparse.training.card` -- the end of a run: ``model.pt`` and the model card ``model.json``.
* :mod:`~msparse.training.cli` -- the ``python -m msparse train`` options.
"""
