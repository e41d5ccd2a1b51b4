"""Segmentation: tiles and their scale, the Dask graph of chunks, where it runs, and the
class and confidence rasters it writes.

May import the base modules, :mod:`agriseg.io` and :mod:`agriseg.models`
(``tests/test_imports.py``).
"""
