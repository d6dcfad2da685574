"""Reporting: reference numbers, verdict rules, figures and widgets for the book.

* :mod:`~msparse.report.paper` -- the reference values (paper tables, official READMEs, RobustBench), with sources.
* :mod:`~msparse.report.verdicts` -- the rules that turn paired comparisons into a verdict line.
* :mod:`~msparse.report.plots` -- the figures.
* :mod:`~msparse.report.widgets` -- live α exploration and the kernel-free α slider of the static book.
"""
