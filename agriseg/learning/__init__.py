"""Learning: labels (and the GeoPackage layer users draw them in), labelled image sets,
generated surveys, training, metrics and evaluation against ground truth.

May import the base modules, :mod:`agriseg.io`, :mod:`agriseg.models`,
:mod:`agriseg.segmentation`, :mod:`agriseg.health` (the QGIS styles of the labelling
layer) and :mod:`agriseg.run` (evaluation scores a real run)
(``tests/test_imports.py``).
"""
