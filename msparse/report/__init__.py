"""Reporting: reference numbers, verdict rules, figures and widgets for the book.

* :mod:`~msparse.report.paper` -- the reference values (paper tables, official READMEs, RobustBench), with sources.
* :mod:`~msparse.report.verdicts` -- the rules that turn paired comparisons into a verdict.
* :mod:`~msparse.report.verdict_lines` -- a page's verdict line, worded from a verdict or from its sweep rows.
* :mod:`~msparse.report.referee` -- the referee's verdict: a gain that must survive every attack.
* :mod:`~msparse.report.plots` -- the figures.
* :mod:`~msparse.report.widgets` -- live α exploration and the kernel-free α slider of the static book.
"""
