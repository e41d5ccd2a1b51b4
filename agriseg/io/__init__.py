"""Files in and out: rasters, pixel grids, band names, ground areas, atomic writes,
locks and GDAL settings.

The lowest floor: it may import only the loose base modules (``errors``, ``optional``,
``classes``, ``config``), never a stage above it (``tests/test_imports.py``).
"""
