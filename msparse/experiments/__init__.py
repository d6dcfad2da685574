"""Experiments: each page of the book as code — setting up a model (:mod:`~msparse.experiments.setup`) and its α
sweeps through the one engine (:mod:`~msparse.experiments.sweeps`); the pages' notebooks call these and display
the results with :mod:`msparse.report`.
"""
