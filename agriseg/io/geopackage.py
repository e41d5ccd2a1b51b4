"""GeoPackage files: the version agriseg creates, and the one call that writes a layer.

Every GeoPackage agriseg writes (health products, prescriptions, plant counts, generated
surveys) goes through :func:`write_layer`, which creates it as GeoPackage
:data:`GPKG_VERSION`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyogrio

#: GeoPackage version of the files agriseg creates. GDAL 3.10 creates 1.4 by
#: default, which GDAL 3.6 (as under Debian 12's QGIS 3.22) opens with a warning that
#: it "may only be partially supported"; 1.2 is read without one by every GDAL since
#: 2.2, and agriseg's layers use nothing added later.
GPKG_VERSION = "1.2"


def write_layer(
    frame: pd.DataFrame, path: Path, layer: str, driver: str = "GPKG", **options: Any
) -> None:
    """Write ``frame`` (a GeoDataFrame, or a DataFrame for a table) as ``layer`` of the
    OGR file ``path``: a new GeoPackage is created as :data:`GPKG_VERSION`, an existing
    one keeps its other layers. ``options`` go to :func:`pyogrio.write_dataframe`
    (``append``, ``geometry_type``, ``layer_options``...)."""
    dataset_options = {"VERSION": GPKG_VERSION} if driver == "GPKG" else None
    pyogrio.write_dataframe(
        frame, path, layer=layer, driver=driver, dataset_options=dataset_options, **options
    )
