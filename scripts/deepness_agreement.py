"""How far QGIS Deepness's map of an exported model agrees with ``agriseg run``'s.

Deepness (https://github.com/PUTvision/qgis-plugin-deepness) needs QGIS to run, so
this script re-implements, step by step, what it does to a raster layer when its
processing parameters are the defaults it loads from the ONNX file's metadata
(*Load default parameters*), processed area *Entire layer*, RGB bands mapped to the
model's three inputs. Every function names the Deepness source it mirrors (paths under
``src/deepness/``). ``agriseg run --model FILE.onnx`` then segments the same raster,
and the two class maps are compared pixel by pixel.

    python scripts/deepness_agreement.py                       # shipped U-Net, a 1024 px survey
    python scripts/deepness_agreement.py --model my.onnx --size 1500 --seed 3
    python scripts/deepness_agreement.py --raster field.tif    # your own orthomosaic

Prints the share of pixels where the two maps agree, overall and by distance from the
raster's edges, with the settings Deepness used (see docs/qgis.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

#: Decimals of Deepness's *Resolution [cm/px]* spin box (``deepness_dockwidget.ui``,
#: ``doubleSpinBox_resolution_cm_px``): the value it loads from the file is rounded to it.
RESOLUTION_DECIMALS = 2


@dataclass(frozen=True)
class DeepnessSettings:
    """The processing parameters Deepness takes from an ONNX file's metadata.

    Attributes:
        resolution_cm: *Resolution [cm/px]*: the layer is resampled to it.
        tile_size: *Tile size [px]*: the model input's edge.
        overlap_pct: *Tiles overlap [%]* (the percentage option is the default one).
        small_segment: *Remove small segments* size; 0 leaves the box unticked.
        threshold: *Probability threshold*; 0 leaves the box unticked.
        mean: Standardisation mean per input channel (after dividing by 255).
        std: Standardisation standard deviation per input channel.
    """

    resolution_cm: float
    tile_size: int
    overlap_pct: int
    small_segment: int
    threshold: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_onnx(cls, path: Path) -> DeepnessSettings:
        """Mirror ``processing/models/model_base.py`` (``ModelBase.get_metadata_*``:
        ``json.loads`` then ``int``/``float`` of each key) and
        ``deepness_dockwidget.py`` (``_load_default_model_parameters``, the spin boxes
        the values land in, and ``get_segmentation_parameters``)."""
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = session.get_modelmeta().custom_metadata_map

        def value(key: str) -> object:
            return json.loads(props[key])

        # The tile size is the input's edge whatever the metadata says
        # (_load_model_and_display_info sets the spin box from the input shape).
        tile = int(session.get_inputs()[0].shape[-1])
        small = int(value("seg_small_segment"))  # type: ignore[call-overload]
        threshold = float(value("seg_thresh"))  # type: ignore[arg-type]
        return cls(
            resolution_cm=round(float(value("resolution")), RESOLUTION_DECIMALS),  # type: ignore[arg-type]
            tile_size=tile,
            overlap_pct=int(value("tiles_overlap")),  # type: ignore[call-overload]
            # checkBox_removeSmallAreas is ticked when the value is not 0; unticked, 0.
            small_segment=small,
            threshold=threshold,  # checkBox_pixelClassEnableThreshold: ticked when not 0
            mean=tuple(float(v) for v in value("standardization_mean")),  # type: ignore[attr-defined]
            std=tuple(float(v) for v in value("standardization_std")),  # type: ignore[attr-defined]
        )

    @property
    def overlap_px(self) -> int:
        """``common/processing_overlap.py``, ``ProcessingOverlap.get_overlap_px``
        (percentage option): not necessarily even, despite its caller's docstring."""
        return int(self.tile_size * self.overlap_pct / 100 * 2) // 2

    @property
    def stride_px(self) -> int:
        """``MapProcessingParameters.processing_stride_px``."""
        return self.tile_size - self.overlap_px

    @property
    def median_size(self) -> int:
        """Edge of the median filter ``MapProcessorSegmentation._run`` applies:
        ``int(size // 2) * 2 + 1``; 1 (0 or 1 stored) is no filter
        (``cv2.medianBlur`` copies its input for a kernel of 1)."""
        return int(self.small_segment // 2) * 2 + 1


def _missing_px(pixels: int, tile: int, stride: int) -> int:
    """``extent_utils.calculate_extended_processing_extent``: pixels added so that the
    extent is ``tile + N * stride``."""
    if pixels <= tile:
        return tile - pixels
    return (stride - (pixels - tile) % stride) % stride


def _read_tile(
    src: rasterio.io.DatasetReader,
    bounds: tuple[float, float, float, float],
    tile: int,
    bands: tuple[int, ...],
) -> np.ndarray:
    """``processing_utils.get_tile_image``: the layer's bands over ``bounds`` at
    ``tile`` x ``tile`` pixels, bilinear (``data_provider.setZoomedIn/Out
    ResamplingMethod(Bilinear)``: QGIS's GDAL provider asks GDAL for it), zero beyond
    the raster (QGIS's provider block there). Returns (H, W, C) uint8."""
    window = from_bounds(*bounds, transform=src.transform)
    data = src.read(
        bands,
        window=window,
        out_shape=(len(bands), tile, tile),
        boundless=True,
        fill_value=0,
        resampling=Resampling.bilinear,
    )
    return np.moveaxis(data, 0, -1)


def _process_tiles(session: object, settings: DeepnessSettings, tiles: np.ndarray) -> np.ndarray:
    """``ModelBase.preprocessing`` (``models/preprocessing_utils.py``: limit channels,
    ``* 1/255`` as float32, ``(x - mean) / std``, NHWC to NCHW), ``Segmentor.
    postprocessing`` (the output as it is) and ``MapProcessorSegmentation._process_tile``
    (probabilities under the threshold set to 0, argmax over classes)."""
    n_inputs = session.get_inputs()[0].shape[1]  # type: ignore[attr-defined]
    x: np.ndarray = (tiles[..., :n_inputs] * 1.0 / 255.0).astype(np.float32)
    # common/processing_parameters/standardization_parameters.py: float32 mean and std.
    x = (x - np.array(settings.mean, np.float32)) / np.array(settings.std, np.float32)
    x = np.transpose(x, (0, 3, 1, 2))
    name = session.get_inputs()[0].name  # type: ignore[attr-defined]
    result = session.run(None, {name: x})[0]  # type: ignore[attr-defined]
    result[result < settings.threshold] = 0.0
    return np.argmax(result, axis=1)


def deepness_class_map(
    raster: Path, model: Path, settings: DeepnessSettings, batch_size: int = 4
) -> tuple[np.ndarray, float]:
    """Deepness's class map of ``raster`` (*Entire layer*) at ``settings``'
    resolution, and that resolution in metres.

    Mirrors ``processing/map_processor/map_processor.py`` (``MapProcessor.__init__``,
    ``tiles_generator``, ``tiles_generator_batched``), ``processing/extent_utils.py``,
    ``processing/tile_params.py`` (``TileParams``) and
    ``map_processor/map_processor_segmentation.py`` (``_run``).
    """
    import onnxruntime as ort
    from scipy.ndimage import median_filter

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    res = settings.resolution_cm / 100  # rlayer_units_per_pixel (a metre CRS)
    tile, stride = settings.tile_size, settings.stride_px
    with rasterio.open(raster) as src:
        left, bottom, right, top = src.bounds
        # base extent: the layer's; extended: +- half overlap, cut back to the layer,
        # then grown to the right and upwards (setXMaximum, setYMaximum) to whole tiles.
        width_px = round((right - left) / res)
        height_px = round((top - bottom) / res)
        missing_x = _missing_px(width_px, tile, stride)
        missing_y = _missing_px(height_px, tile, stride)
        ext_left, ext_top = left, top + missing_y * res
        img_w = round((right + missing_x * res - ext_left) / res)
        img_h = round((ext_top - bottom) / res)
        x_bins = round((img_w - tile) / stride) + 1
        y_bins = round((img_h - tile) / stride) + 1
        full = np.zeros((img_h, img_w), np.uint8)
        half = (tile - stride) // 2  # TileParams.get_slice_on_full_image_for_copying
        bands = (1, 2, 3)
        batch: list[np.ndarray] = []
        places: list[tuple[int, int]] = []

        def flush() -> None:
            for (ty, tx), result in zip(
                places, _process_tiles(session, settings, np.array(batch)), strict=True
            ):
                x0, y0 = tx * stride, ty * stride
                x_min, x_max = x0 + half, x0 + tile - half - 1
                y_min, y_max = y0 + half, y0 + tile - half - 1
                if tx == 0:
                    x_min -= half
                if ty == 0:
                    y_min -= half
                if tx == x_bins - 1:
                    x_max += half
                if ty == y_bins - 1:
                    y_max += half
                full[y_min : y_max + 1, x_min : x_max + 1] = result[
                    y_min - y0 : y_max + 1 - y0, x_min - x0 : x_max + 1 - x0
                ]
            batch.clear()
            places.clear()

        for ty in range(y_bins):
            for tx in range(x_bins):
                x_min = ext_left + tx * stride * res
                y_max = ext_top - ty * stride * res
                bounds = (x_min, y_max - tile * res, x_min + tile * res, y_max)
                batch.append(_read_tile(src, bounds, tile, bands))
                places.append((ty, tx))
                if len(batch) >= batch_size:
                    flush()
        if batch:
            flush()
    if settings.median_size > 1:
        # cv2.medianBlur on the extended map, before cropping: OpenCV's border is
        # BORDER_REPLICATE, scipy's "nearest"; for uint8 both give the exact median.
        full = median_filter(full, size=settings.median_size, mode="nearest")
    # limit_extended_extent_image_to_base_extent_with_mask with
    # extent_utils.calculate_base_extent_bbox_in_full_image.
    y_min = img_h - 1 - round((top - bottom) / res - 1)
    y_max = img_h - 1 - round((bottom - bottom) / res)
    x_max = round((right - left) / res) - 1
    return full[y_min : y_max + 1, 0 : x_max + 1], res


def agriseg_class_map(raster: Path, model: Path, out_dir: Path) -> np.ndarray:
    """``agriseg run RASTER --model MODEL --resample off``'s class raster (defaults
    otherwise): Deepness feeds tiles at the model's resolution, while ``auto`` follows
    the shipped model's measured policy (the U-Net's enlarges 2.9 cm imagery 2x)."""
    from agriseg.config import HealthOptions, RunConfig
    from agriseg.run import segment_raster

    config = RunConfig(
        model=str(model),
        device="cpu",
        resample="off",
        health=HealthOptions(polygons="none", formats=("geojson",), preview=False),
    )
    segment_raster(raster, out_dir, config)
    with rasterio.open(out_dir / f"{raster.stem}.classes.tif") as src:
        return src.read(1)


def on_raster_grid(deepness: np.ndarray, res: float, raster: Path) -> np.ndarray:
    """Deepness's map (at ``res``) on the raster's own grid, nearest pixel centre."""
    with rasterio.open(raster) as src:
        height, width = src.height, src.width
        gsd_x, gsd_y = src.res
    if (height, width) == deepness.shape and abs(gsd_x - res) < 1e-9 * res:
        return deepness
    rows = np.minimum(((np.arange(height) + 0.5) * gsd_y / res).astype(int), deepness.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * gsd_x / res).astype(int), deepness.shape[1] - 1)
    return deepness[np.ix_(rows, cols)]


#: Width of the edge strips reported on their own, in pixels.
EDGE_PX = 8

#: Distance from every edge beyond which a pixel counts as interior, in pixels.
INTERIOR_PX = 32


@dataclass(frozen=True)
class Agreement:
    """Agreement of the two class maps: overall, along each edge and inside."""

    settings: DeepnessSettings
    share: float
    pixels: int
    edges: dict[str, float]
    interior: float

    def report(self) -> str:
        s = self.settings
        filter_ = "off" if s.median_size == 1 else f"{s.median_size}x{s.median_size} median"
        lines = [
            f"Deepness settings: resolution {s.resolution_cm} cm/px, tile {s.tile_size} px, "
            f"overlap {s.overlap_pct} % = {s.overlap_px} px (stride {s.stride_px} px), "
            f"remove small segments {s.small_segment} ({filter_}), threshold {s.threshold}",
            f"agreement with agriseg run: {100 * self.share:.2f} % of {self.pixels} pixels",
            f"  more than {INTERIOR_PX} px from every edge: {100 * self.interior:.2f} %",
        ]
        lines += [
            f"  within {EDGE_PX} px of the {side} edge: {100 * v:.2f} %"
            for side, v in self.edges.items()
        ]
        return "\n".join(lines)


def compare(raster: Path, model: Path, work: Path, settings: DeepnessSettings) -> Agreement:
    """Run Deepness's processing and ``agriseg run`` on ``raster`` and compare."""
    deepness, res = deepness_class_map(raster, model, settings)
    theirs = on_raster_grid(deepness, res, raster)
    ours = agriseg_class_map(raster, model, work)
    same = theirs == ours
    h, w = same.shape
    edges = {
        "top": same[:EDGE_PX],
        "bottom": same[-EDGE_PX:],
        "left": same[:, :EDGE_PX],
        "right": same[:, -EDGE_PX:],
    }
    inner = same[INTERIOR_PX : h - INTERIOR_PX, INTERIOR_PX : w - INTERIOR_PX]
    return Agreement(
        settings,
        float(same.mean()),
        same.size,
        {side: float(strip.mean()) for side, strip in edges.items()},
        float(inner.mean()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="exported .onnx (default: shipped U-Net)")
    parser.add_argument("--raster", type=Path, help="an RGB orthomosaic (default: generated)")
    parser.add_argument("--size", type=int, default=1024, help="generated survey edge (px)")
    parser.add_argument("--height", type=int, help="generated survey rows (default --size)")
    parser.add_argument("--seed", type=int, default=5, help="generated survey seed")
    parser.add_argument("--overlap-pct", type=int, help="override the file's tiles_overlap")
    parser.add_argument("--small-segment", type=int, help="override seg_small_segment")
    parser.add_argument("--resolution-cm", type=float, help="override the resolution (cm/px)")
    parser.add_argument("--gsd", type=float, help="generated survey GSD, m (default: model's)")
    args = parser.parse_args(argv)

    from agriseg.models.onnx_format import read_onnx_meta
    from agriseg.models.registry import shipped_dir

    model = args.model or shipped_dir() / "agriseg-unet.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raster = args.raster
        if raster is None:
            from agriseg.learning.synthetic import draw_params, generate_survey, write_survey

            meta = read_onnx_meta(model)
            params = draw_params(
                args.seed, args.height or args.size, args.size, gsd_m=args.gsd or meta.gsd_m
            )
            raster = write_survey(generate_survey(params, args.seed), Path(tmp), "survey").image
        settings = DeepnessSettings.from_onnx(model)
        for name, value in (
            ("overlap_pct", args.overlap_pct),
            ("small_segment", args.small_segment),
            ("resolution_cm", args.resolution_cm),
        ):
            if value is not None:
                settings = dataclasses.replace(settings, **{name: value})
        print(compare(raster, model, Path(tmp) / "run", settings).report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
