"""Builders of the paper's tables and figures, reading run folders and solving small problems.

One module per artefact, each with ``main(argv)``: ``table1`` (Table 1 from MNIST runs),
``memory`` (training memory against depth), ``fig1``, ``fig2``, ``fig3`` and ``report``
(outputs/paper/REPORT.md). Everything is written under ``outputs/paper/``.
"""
