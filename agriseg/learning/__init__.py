"""Learning: labels, labelled image sets, generated surveys, training, metrics and
evaluation against ground truth.

May import the base modules, :mod:`agriseg.io`, :mod:`agriseg.models`,
:mod:`agriseg.segmentation` and :mod:`agriseg.run` (evaluation scores a real run)
(``tests/test_imports.py``).
"""
