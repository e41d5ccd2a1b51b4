"""QGIS styles of agriseg's layers: ``.qml`` sidecars and GeoPackage ``layer_styles``.

QGIS styles a file-based layer it opens from ``<file without extension>.qml``
beside it, so ``<stem>.health.qml`` styles both ``<stem>.health.geojson`` and
``<stem>.health.gpkg``, and ``<stem>.classes.qml`` the class raster
``<stem>.classes.tif``; for a GeoPackage it first looks for a default style in the
file's ``layer_styles`` table, which is how each layer of the GeoPackage (health
polygons, zones) gets its own style.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyogrio

from agriseg.classes import ClassList
from agriseg.io.geopackage import write_layer

#: Weed-pressure classes of the zone style: (upper bound, RGB), from clean to infested.
WEED_PRESSURE_RANGES: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.05, (26, 150, 65)),
    (0.15, (166, 217, 106)),
    (0.30, (255, 255, 191)),
    (0.50, (253, 174, 97)),
    (1.00, (215, 25, 28)),
)

#: Name of the GeoPackage table QGIS reads layer styles from.
STYLE_TABLE = "layer_styles"


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> ET.Element:
    symbol = ET.Element(
        "symbol",
        name=name,
        type="fill",
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
    )
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill"}, enabled="1", locked="0")
    props = {
        "color": "{},{},{},255".format(*rgb),
        "style": "solid",
        "outline_color": "{},{},{},255".format(*(int(v * 0.7) for v in rgb)),
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
    }
    # QGIS ≥ 3.26 reads the Option map; older versions read the prop elements.
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", name=key, type="QString", value=value)
    for key, value in props.items():
        ET.SubElement(layer, "prop", k=key, v=value)
    return symbol


def _document(*children: ET.Element) -> str:
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    root.extend(children)
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def _polygon_document(renderer: ET.Element) -> str:
    geometry_type = ET.Element("layerGeometryType")
    geometry_type.text = "2"  # polygons
    return _document(renderer, geometry_type)


def categorized_qml(
    attribute: str, categories: Sequence[tuple[str, str, tuple[int, int, int]]]
) -> str:
    """QML of a categorized fill renderer.

    Args:
        attribute: Field the categories are read from.
        categories: ``(value, label, rgb)`` per category.
    """
    renderer = ET.Element(
        "renderer-v2",
        type="categorizedSymbol",
        attr=attribute,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for k, (value, label, rgb) in enumerate(categories):
        ET.SubElement(cats, "category", value=value, label=label, symbol=str(k), render="true")
        symbols.append(_fill_symbol(str(k), rgb))
    return _polygon_document(renderer)


def graduated_qml(
    attribute: str,
    ranges: Sequence[tuple[float, float, tuple[int, int, int]]],
    labels: Sequence[str] | None = None,
) -> str:
    """QML of a graduated fill renderer with ``(lower, upper, rgb)`` ranges.

    ``labels`` name the ranges in the legend (default: the bounds as percentages).
    """
    renderer = ET.Element(
        "renderer-v2",
        type="graduatedSymbol",
        attr=attribute,
        graduatedMethod="GraduatedColor",
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    rngs = ET.SubElement(renderer, "ranges")
    symbols = ET.SubElement(renderer, "symbols")
    for k, (lower, upper, rgb) in enumerate(ranges):
        label = labels[k] if labels is not None else f"{lower:.0%} – {upper:.0%}"
        ET.SubElement(
            rngs,
            "range",
            lower=f"{lower:g}",
            upper=f"{upper:g}",
            label=label,
            symbol=str(k),
            render="true",
        )
        symbols.append(_fill_symbol(str(k), rgb))
    return _polygon_document(renderer)


def class_style(classes: ClassList) -> str:
    """Style of the health polygons: one colour per class, on the ``class`` attribute."""
    return categorized_qml("class", [(c.name, c.name, c.colour) for c in classes])


def class_raster_style(classes: ClassList) -> str:
    """Style of the class raster: a paletted renderer listing only the model's classes,
    each under its name and in its colour (QGIS's default style from the raster's
    256-entry colour table would list every id, nodata included)."""
    pipe = ET.Element("pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1"
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(c.id),
            color="#{:02x}{:02x}{:02x}".format(*c.colour),
            alpha="255",
            label=c.name,
        )
    return _document(pipe)


def zone_style() -> str:
    """Style of the management-zone grid: weed pressure from green to red."""
    bounds = [0.0, *(upper for upper, _ in WEED_PRESSURE_RANGES)]
    return graduated_qml(
        "weed_pressure",
        [(lo, hi, rgb) for lo, (hi, rgb) in zip(bounds, WEED_PRESSURE_RANGES, strict=False)],
    )


def write_layer_styles(gpkg_path: Path, styles: Mapping[str, str]) -> None:
    """Store ``{layer: qml}`` as the default QGIS styles inside a GeoPackage.

    Writes the ``layer_styles`` table with the columns QGIS reads and writes
    itself, so QGIS applies each style when the layer is opened.
    """
    now = pd.Timestamp.now(tz="UTC").floor("ms")
    rows = []
    for layer, qml in styles.items():
        geometry_column = pyogrio.read_info(gpkg_path, layer=layer)["geometry_name"] or "geom"
        rows.append(
            {
                "f_table_catalog": "",
                "f_table_schema": "",
                "f_table_name": layer,
                "f_geometry_column": geometry_column,
                "styleName": layer,
                "styleQML": qml,
                "styleSLD": "",
                "useAsDefault": True,
                "description": "agriseg default style",
                "owner": "",
                "ui": "",
                "update_time": now,
            }
        )
    # GeoPackage DATETIME is UTC text "YYYY-MM-DDTHH:MM:SS.SSSZ": the timestamp is UTC so
    # GDAL writes the Z, and MILLISECOND makes it write ".000" where it would drop it
    # (older GDALs ignore the option). Other text makes GDAL warn "Non-conformant content".
    write_layer(
        pd.DataFrame(rows),
        gpkg_path,
        STYLE_TABLE,
        layer_options={"DATETIME_PRECISION": "MILLISECOND"},
    )
