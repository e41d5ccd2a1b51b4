"""The field-health pass over a class raster: strips, sieving and polygons, statistics,
vegetation indices, zones, QGIS styles, the preview and the files they make.

May import the base modules, :mod:`agriseg.io` and :mod:`agriseg.segmentation` (the
class-raster writers); never torch (``tests/test_imports.py``).
"""
