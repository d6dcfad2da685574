"""Attacks: what an attack name means, the attacks themselves, and how they run.

* :mod:`~msparse.attacks.registry` -- the front door: :class:`~msparse.attacks.registry.AttackMethod`, one
  registered subclass per attack (:func:`~msparse.attacks.registry.register_attack`,
  :func:`~msparse.attacks.registry.get_attack`, :func:`~msparse.attacks.registry.list_attacks`); adding an attack
  is one new module of this package with one such class (book: Contributing, "Add an attack").
* the attacks, one module each: :mod:`~msparse.attacks.apgd_ce`, :mod:`~msparse.attacks.apgd_dlr`,
  :mod:`~msparse.attacks.apgd_t`, :mod:`~msparse.attacks.fab_t`, :mod:`~msparse.attacks.square` (AutoAttack's
  components, computed by ``pyautoattack``, common base in ``_pyautoattack``), :mod:`~msparse.attacks.gradest`
  (gradient estimation), and whatever else registers (:func:`~msparse.attacks.registry.list_attacks`).
* :mod:`~msparse.attacks.base` -- attack names (``"apgd-ce"``, ``"bpda"``, ``"worst:..."``, ``"gradest[pairs=64]"``),
  their parsing, the multi-attack sequences (``apgd``, ``apgd-ce+t``, ``aa``), what enters the record key, and
  the threat model / budget (:class:`~msparse.attacks.base.AttackConfig`).
* :mod:`~msparse.attacks.autoattack` -- running a parsed name per example (the points still robust go on to the
  next attack), directly, through BPDA, the surrogate backward (:mod:`~msparse.attacks.surrogate`) or transfer,
  and AutoAttack's sanity checks.
* :mod:`~msparse.attacks.binarization` -- the binarization test of an attack's strength.
* :mod:`~msparse.attacks.diagnostics` -- gradient-masking diagnostics (input gradients, zero-gradient rate).
* :mod:`~msparse.attacks.pgd` -- the training-time attacks (PGD, FGSM-RS, the TRADES maximisation).
"""
