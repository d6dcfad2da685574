"""Attacks: what an attack name means, and how it runs.

* :mod:`~msparse.attacks.base` -- attack names (``"apgd-ce"``, ``"bpda"``, ``"worst:..."``), their parsing,
  and the threat model / budget (:class:`~msparse.attacks.base.AttackConfig`).
* :mod:`~msparse.attacks.autoattack` -- running AutoAttack's own attack objects per example, BPDA and
  transfer, and AutoAttack's sanity checks.
* :mod:`~msparse.attacks.diagnostics` -- gradient-masking diagnostics (input gradients, zero-gradient rate).
* :mod:`~msparse.attacks.pgd` -- the training-time attacks (PGD, FGSM-RS, the TRADES maximisation).
"""
