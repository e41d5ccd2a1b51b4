"""Procedural synthetic drone surveys of row crops, with pixel-exact labels.

A survey is drawn in ground units (metres), so plants, soil texture and tracks keep
their real size whatever the ground sampling distance. Each pixel's label is the
object drawn on it: soil (texture, moisture, wheel tracks, plant shadows), crop
plants on rows, weeds of other shapes and greens mostly between the rows, and crop
plants inside disease foci, yellow-brown with darker lesions. Camera effects
(lighting, white balance, blur, noise) change the image, never the labels.

Everything is vectorised numpy; a seed fixes every random choice.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from agriseg.classes import DEFAULT_CLASSES, ClassList, FieldClass
from agriseg.errors import InputError
from agriseg.learning.textures import fbm, gaussian_blur, shift_mask, value_noise, wave_field, waves

SOIL, CROP, WEED, DISEASED = (c.id for c in DEFAULT_CLASSES)

#: Classes of a survey drawn with ``weed_species``: each weed labelled by its kind.
SPECIES_CLASSES = ClassList(
    (
        FieldClass(0, "soil", (150, 105, 60), "background"),
        FieldClass(1, "maize", (40, 160, 50), "crop"),
        FieldClass(2, "grass_weed", (230, 40, 160), "weed"),
        FieldClass(3, "broadleaf_weed", (220, 40, 40), "weed"),
        FieldClass(4, "thistle", (140, 60, 200), "weed"),
    )
)

#: Label of each weed kind (rosette, grass, blob) in a ``weed_species`` survey.
_SPECIES_OF_KIND = np.array([4, 2, 3], np.uint8)

#: Band names of a multispectral survey, in band order (RGB surveys use the first three).
BAND_NAMES: tuple[str, ...] = ("red", "green", "blue", "red_edge", "nir")

#: Surface reflectances (red, green, blue, red edge, NIR) of the drawn materials.
_SOIL = np.array([0.21, 0.165, 0.11, 0.25, 0.29], np.float32)
_CROP = np.array([0.045, 0.11, 0.035, 0.27, 0.48], np.float32)
_CROP_YOUNG = np.array([0.07, 0.15, 0.04, 0.29, 0.46], np.float32)
_WEED_YELLOW = np.array([0.11, 0.16, 0.03, 0.28, 0.42], np.float32)
_WEED_BLUE = np.array([0.035, 0.085, 0.065, 0.22, 0.40], np.float32)
_DISEASED = np.array([0.22, 0.18, 0.035, 0.23, 0.30], np.float32)
_DISEASED_BROWN = np.array([0.17, 0.11, 0.03, 0.19, 0.26], np.float32)
_LESION = np.array([0.07, 0.05, 0.025, 0.10, 0.17], np.float32)

#: Reflectance to display value gain, gamma and saturation of the simulated RGB camera.
_EXPOSURE, _GAMMA, _SATURATION = 1.5, 1 / 2.2, 1.4

#: Mean weed radius; weeds are smaller than crop plants but several pixels across.
_WEED_RADIUS_M = 0.07


@dataclass(frozen=True)
class SurveyParams:
    """Everything that shapes one synthetic survey; sizes are in metres on the ground.

    Attributes:
        height: Image rows.
        width: Image columns.
        gsd_m: Ground sampling distance, metres per pixel.
        row_angle_deg: Direction of the crop rows, degrees anticlockwise from east.
        row_spacing_m: Distance between crop rows.
        plant_spacing_m: Distance between plants along a row.
        plant_radius_m: Mean plant (canopy) radius; capped so rows never touch.
        weed_density: Rough fraction of the area covered by weeds.
        disease_foci: Number of disease patches.
        brightness: Overall illumination factor.
        white_balance: Camera gains for red, green and blue.
        blur_px: Gaussian blur sigma in pixels (0: sharp).
        noise: Sensor noise standard deviation, as a fraction of full scale.
        multispectral: Five bands (RGB, red edge, NIR) of uint16 reflectance x 10000
            instead of an 8-bit RGB image.
        weed_species: Label weeds by kind (:data:`SPECIES_CLASSES`: grass weeds,
            broadleaf weeds, thistle) instead of one ``weed`` class; needs
            ``disease_foci=0`` (those classes have no disease).
        crs: Projected CRS with metre units that the survey is georeferenced in.
        origin: Upper-left corner (x, y) in ``crs`` units.
        row_curvature: Rows bend along arcs of radius ``1 / row_curvature`` metres
            (0: straight rows, as sown on most fields).
        layout: ``rows`` (crop on rows, weeds mostly between them) or ``scattered``
            (crop plants and weeds anywhere: a field without rows).
    """

    height: int = 512
    width: int = 512
    gsd_m: float = 0.02
    row_angle_deg: float = 0.0
    row_spacing_m: float = 0.5
    plant_spacing_m: float = 0.15
    plant_radius_m: float = 0.12
    weed_density: float = 0.05
    disease_foci: int = 2
    brightness: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur_px: float = 0.0
    noise: float = 0.02
    multispectral: bool = False
    weed_species: bool = False
    crs: str = "EPSG:32633"
    origin: tuple[float, float] = (500000.0, 5300000.0)
    row_curvature: float = 0.0
    layout: Literal["rows", "scattered"] = "rows"


def draw_params(seed: int, height: int = 512, width: int = 512, **overrides: Any) -> SurveyParams:
    """Random but plausible survey parameters.

    Ground sampling distance 1-4 cm, any row direction, row and plant spacing of
    common row crops, plant size giving 25-45 % canopy cover, and varied weeds,
    disease, lighting, white balance, blur and noise.

    Args:
        seed: Seed of the draw; the same seed gives the same parameters.
        height: Image rows.
        width: Image columns.
        **overrides: Fields of :class:`SurveyParams` to set instead of drawing them.

    Returns:
        The parameters.

    Raises:
        InputError: An override names no field of :class:`SurveyParams`.
    """
    valid = {f.name for f in fields(SurveyParams)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise InputError(
            f"unknown survey parameter(s) {', '.join(unknown)}; "
            f"expected any of {', '.join(sorted(valid))}"
        )
    rng = np.random.default_rng(seed)
    row_spacing = float(rng.uniform(0.4, 0.75))
    plant_spacing = float(rng.uniform(0.12, 0.3))
    cover = rng.uniform(0.25, 0.4)
    # Plant fill is about 0.55 of the plant's disc, and plants overlap along the row.
    radius = math.sqrt(cover * row_spacing * plant_spacing / (0.5 * math.pi))
    gains = rng.uniform(0.92, 1.08, 3)
    params = SurveyParams(
        height=height,
        width=width,
        gsd_m=float(rng.uniform(0.01, 0.04)),
        row_angle_deg=float(rng.uniform(0.0, 180.0)),
        row_spacing_m=row_spacing,
        plant_spacing_m=plant_spacing,
        plant_radius_m=min(radius, 0.36 * row_spacing),
        weed_density=float(rng.uniform(0.04, 0.08)),
        disease_foci=int(rng.integers(1, 4)),
        brightness=float(rng.uniform(0.75, 1.25)),
        white_balance=(float(gains[0]), 1.0, float(gains[2])),
        blur_px=float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0,
        noise=float(rng.uniform(0.005, 0.035)),
    )
    return replace(params, **overrides)


@dataclass(frozen=True)
class PlantTruth:
    """Every crop plant slot of a survey's lattice, drawn or not (flat arrays, one per slot).

    Attributes:
        x: Centre easting, in the survey's CRS.
        y: Centre northing.
        radius_m: Canopy radius; 0 where the slot holds no plant (gaps, tramlines).
        area_m2: Area of the plant's visible pixels (plants overlap along the row).
        diseased: The plant lies in a disease focus (its pixels are labelled diseased).
        inside: The centre lies inside the image.
    """

    x: np.ndarray
    y: np.ndarray
    radius_m: np.ndarray
    area_m2: np.ndarray
    diseased: np.ndarray
    inside: np.ndarray

    def points(self, crs: CRS) -> gpd.GeoDataFrame:
        """The plants whose centres lie inside the image, as points.

        Returns:
            Columns ``plant_id`` (lattice slot), ``area_m2``, ``radius_m``, ``diseased``
            and point ``geometry``, in ``crs``.
        """
        keep = np.flatnonzero((self.radius_m > 0) & self.inside)
        return gpd.GeoDataFrame(
            {
                "plant_id": keep.astype(np.int64),
                "area_m2": self.area_m2[keep],
                "radius_m": self.radius_m[keep],
                "diseased": self.diseased[keep].astype(bool),
            },
            geometry=gpd.points_from_xy(self.x[keep], self.y[keep]),
            crs=crs,
        )


@dataclass(frozen=True)
class Survey:
    """A generated survey: image, labels and georeferencing.

    Attributes:
        image: ``(bands, H, W)``; uint8 RGB, or uint16 reflectance x 10000 with the
            bands of :data:`BAND_NAMES` when multispectral.
        labels: ``(H, W)`` uint8 class ids of :attr:`classes`.
        transform: Pixel to ``crs`` affine transform.
        crs: Coordinate reference system.
        params: The parameters it was drawn with.
        plants: Where every crop plant was drawn (the truth for plant counts).
    """

    image: np.ndarray
    labels: np.ndarray
    transform: Affine
    crs: CRS
    params: SurveyParams
    plants: PlantTruth

    @property
    def classes(self) -> ClassList:
        """What the label ids mean."""
        return SPECIES_CLASSES if self.params.weed_species else DEFAULT_CLASSES


@dataclass(frozen=True)
class _Plants:
    """Attribute tables of plants on a lattice of parallel lines, flat-indexed by (line, slot).

    A plant sits near slot ``s`` of line ``k`` at ``u = (s + 0.5) * slot_pitch + du``,
    ``v = line0 + k * line_pitch + dv``; ``radius`` is 0 where there is none. Its outline
    is ``r(theta) = radius * (base + (1 - base) * |cos(leaves / 2 * (theta - phase))| ** sharp
    + wobble * sin(3 * theta + phase))``.
    """

    k0: int
    s0: int
    n_slots: int
    line0: float
    line_pitch: float
    slot_pitch: float
    reach: int
    du: np.ndarray
    dv: np.ndarray
    radius: np.ndarray
    leaves: np.ndarray
    phase: np.ndarray
    base: np.ndarray
    sharp: np.ndarray
    wobble: np.ndarray
    line_reach: int = 0


def _check(params: SurveyParams) -> CRS:
    positive = ("gsd_m", "row_spacing_m", "plant_spacing_m", "plant_radius_m", "brightness")
    for name in positive:
        if not getattr(params, name) > 0:
            raise InputError(f"survey parameter {name}={getattr(params, name)!r} must be > 0")
    if params.height < 1 or params.width < 1:
        raise InputError(f"survey size {params.height}x{params.width} must be at least 1x1 pixels")
    for name in ("weed_density", "blur_px", "noise", "disease_foci"):
        if getattr(params, name) < 0:
            raise InputError(f"survey parameter {name}={getattr(params, name)!r} must be >= 0")
    if params.weed_species and params.disease_foci:
        raise InputError(
            f"weed_species surveys have no disease class; set disease_foci=0 "
            f"(not {params.disease_foci})"
        )
    if params.layout not in ("rows", "scattered"):
        raise InputError(f"survey layout {params.layout!r}: expected rows or scattered")
    if len(params.white_balance) != 3 or min(params.white_balance) <= 0:
        raise InputError(
            f"white_balance={params.white_balance!r} must be three positive gains (r, g, b)"
        )
    try:
        return CRS.from_user_input(params.crs)
    except (CRSError, ValueError) as exc:
        raise InputError(
            f"survey crs {params.crs!r} is not a valid CRS; give e.g. 'EPSG:32633'"
        ) from exc


def _lattice_extent(
    u: np.ndarray, v: np.ndarray, line0: float, line_pitch: float, slot_pitch: float, reach: int
) -> tuple[int, int, int, int]:
    k0 = math.floor((float(v.min()) - line0) / line_pitch) - 1
    k1 = math.ceil((float(v.max()) - line0) / line_pitch) + 1
    s0 = math.floor(float(u.min()) / slot_pitch) - reach - 1
    s1 = math.ceil(float(u.max()) / slot_pitch) + reach + 1
    return k0, k1 - k0 + 1, s0, s1 - s0 + 1


def _draw_plants(
    u: np.ndarray, v: np.ndarray, plants: _Plants
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise a lattice of plants at the flat pixel positions ``u``, ``v`` (metres).

    Returns:
        Per pixel: the flat index of the top plant covering it (-1 for none), its depth
        (0 at the plant's centre, 1 at its outline) and the distance across the leaf
        from the leaf's midrib, as a fraction of the leaf's half width.
    """
    k = np.floor((v - plants.line0) / plants.line_pitch + 0.5).astype(np.int64)
    s = np.floor(u / plants.slot_pitch).astype(np.int64)
    index = (k - plants.k0) * plants.n_slots + (s - plants.s0)
    u_rel = u - ((s + 0.5) * plants.slot_pitch).astype(np.float32)
    v_rel = v - (plants.line0 + k * plants.line_pitch).astype(np.float32)
    best = np.full(u.shape, -1, np.int64)
    depth = np.ones(u.shape, np.float32)
    across = np.zeros(u.shape, np.float32)
    # Plants may reach into the next slots along their line, and (``line_reach``) into
    # the next lines.
    for dk, ds in itertools.product(
        range(-plants.line_reach, plants.line_reach + 1), range(-plants.reach, plants.reach + 1)
    ):
        idx = index + dk * plants.n_slots + ds
        r = plants.radius[idx]
        du = u_rel - np.float32(ds * plants.slot_pitch) - plants.du[idx]
        dv = v_rel - np.float32(dk * plants.line_pitch) - plants.dv[idx]
        d2 = du * du + dv * dv
        cand = np.flatnonzero(d2 < r * r)
        if cand.size == 0:
            continue
        ids = idx[cand]
        theta = np.arctan2(dv[cand], du[cand])
        leaf = 0.5 * plants.leaves[ids] * (theta - plants.phase[ids])
        cos_leaf = np.abs(np.cos(leaf))
        base = plants.base[ids]
        outline = (
            base
            + (1 - base) * cos_leaf ** plants.sharp[ids]
            + plants.wobble[ids] * np.sin(3 * theta + plants.phase[ids])
        )
        q = np.sqrt(d2[cand]) / (r[cand] * np.maximum(outline, 1e-3))
        take = (q < 1) & (q < depth[cand])
        hit = cand[take]
        best[hit] = ids[take]
        depth[hit] = q[take]
        across[hit] = np.sqrt(np.maximum(1 - cos_leaf[take], 0))
    return best, depth, across


def _plant_tables(
    rng: np.random.Generator,
    n: int,
    radius: np.ndarray,
    leaves: tuple[int, int],
    base: tuple[float, float],
    sharp: tuple[float, float],
    wobble: tuple[float, float],
) -> dict[str, np.ndarray]:
    f32 = np.float32
    return {
        "radius": radius.astype(f32),
        "leaves": rng.integers(leaves[0], leaves[1] + 1, n).astype(f32),
        "phase": rng.uniform(0, 2 * math.pi, n).astype(f32),
        "base": rng.uniform(*base, n).astype(f32),
        "sharp": rng.uniform(*sharp, n).astype(f32),
        "wobble": rng.uniform(*wobble, n).astype(f32),
    }


def _crop_plants(
    rng: np.random.Generator, params: SurveyParams, u: np.ndarray, v: np.ndarray
) -> tuple[_Plants, np.ndarray, np.ndarray]:
    """Crop plants on the rows; also returns the plants' centres (u, v)."""
    rs, ps = params.row_spacing_m, params.plant_spacing_m
    scattered = params.layout == "scattered"
    jitter_u, jitter_v = 0.15 * ps, min(0.03, 0.06 * rs)
    if scattered:  # anywhere in the slot's cell: the lattice leaves no trace
        jitter_u, jitter_v = 0.5 * ps, 0.5 * rs
    r_mean = min(params.plant_radius_m, 0.36 * rs)
    r_max = min(1.25 * r_mean, rs / 2 - jitter_v - 0.02) if not scattered else 1.25 * r_mean
    reach = math.ceil((r_max + jitter_u) / ps - 0.5)
    line0 = float(rng.uniform(0, rs))
    k0, nk, s0, ns = _lattice_extent(u, v, line0, rs, ps, reach)
    n = nk * ns
    radius = np.clip(rng.normal(r_mean, 0.12 * r_mean, n), 0.5 * r_mean, r_max)
    radius[rng.random(n) < 0.06] = 0  # gaps in the stand
    # Tramlines: unsown rows where the sprayer's wheels run, about every 12-24 m.
    lines = np.arange(k0, k0 + nk)
    period = max(int(round(rng.uniform(12, 24) / rs)), 4)
    tram = (lines - int(rng.integers(0, period))) % period == 0
    if not scattered:
        radius.reshape(nk, ns)[tram] = 0
    du = rng.uniform(-jitter_u, jitter_u, n)
    dv = rng.uniform(-jitter_v, jitter_v, n)
    tables = _plant_tables(rng, n, radius, (4, 7), (0.35, 0.55), (0.5, 1.1), (0.0, 0.04))
    plants = _Plants(
        k0,
        s0,
        ns,
        line0,
        rs,
        ps,
        reach,
        du.astype(np.float32),
        dv.astype(np.float32),
        **tables,
        line_reach=int(scattered),
    )
    k = np.repeat(lines, ns)
    s = np.tile(np.arange(s0, s0 + ns), nk)
    return plants, (s + 0.5) * ps + du, line0 + k * rs + dv


def _weeds(
    rng: np.random.Generator, params: SurveyParams, u: np.ndarray, v: np.ndarray, line0: float
) -> tuple[_Plants, np.ndarray, np.ndarray]:
    """Weeds on lines midway between the rows; also returns each weed's colour (5, n)
    and kind (0 rosette, 1 grass, 2 irregular blob)."""
    rs = params.row_spacing_m
    pitch = 2.6 * _WEED_RADIUS_M
    reach = 1
    k0, nk, s0, ns = _lattice_extent(u, v, line0 + rs / 2, rs, pitch, reach)
    n = nk * ns
    kind = rng.integers(0, 3, n)  # 0: rosette of narrow leaves, 1: grass, 2: irregular blob
    radius = np.clip(rng.normal(_WEED_RADIUS_M, 0.25 * _WEED_RADIUS_M, n), 0.035, 0.11)
    tables = _plant_tables(rng, n, radius, (7, 12), (0.2, 0.35), (1.5, 3.0), (0.0, 0.0))
    grass, blob = kind == 1, kind == 2
    tables["leaves"][grass] = rng.integers(3, 6, int(grass.sum()))
    tables["sharp"][grass] = rng.uniform(4, 7, int(grass.sum()))
    tables["base"][grass] = 0.1
    tables["leaves"][blob] = rng.integers(2, 4, int(blob.sum()))
    tables["sharp"][blob] = 0.6
    tables["base"][blob] = rng.uniform(0.55, 0.7, int(blob.sum()))
    tables["wobble"][blob] = rng.uniform(0.1, 0.25, int(blob.sum()))
    # Mostly midway between the rows, sometimes reaching the crop.
    room = np.maximum(rs / 2 - radius * 1.05, 0)
    dv = np.clip(rng.normal(0, 0.2 * rs, n), -room, room)
    du = rng.uniform(-0.2, 0.2, n) * pitch
    scattered = params.layout == "scattered"
    if scattered:  # anywhere, like the crop
        dv = rng.uniform(-0.5, 0.5, n) * rs
        du = rng.uniform(-0.5, 0.5, n) * pitch
    tables["radius"] = np.minimum(tables["radius"], 0.75 * pitch).astype(np.float32)
    # Weeds grow in patches: the chance of one follows a smooth field over the ground.
    area = math.pi * _WEED_RADIUS_M**2 * 0.45
    chance = params.weed_density * rs * pitch / area
    k = np.repeat(np.arange(k0, k0 + nk), ns)
    s = np.tile(np.arange(s0, s0 + ns), nk)
    patch = 1 + 0.7 * waves(rng, (s + 0.5) * pitch, k * rs, (3.0, 10.0))
    tables["radius"][rng.random(n) >= chance * patch] = 0
    yellow = rng.random(n) < 0.5
    colour = np.where(yellow, _WEED_YELLOW[:, None], _WEED_BLUE[:, None])
    colour *= rng.uniform(0.9, 1.1, n).astype(np.float32)
    plants = _Plants(
        k0,
        s0,
        ns,
        line0 + rs / 2,
        rs,
        pitch,
        reach,
        du.astype(np.float32),
        dv.astype(np.float32),
        **tables,
        line_reach=int(scattered),
    )
    return plants, colour.astype(np.float32), kind


def _diseased_plants(
    rng: np.random.Generator,
    params: SurveyParams,
    centre_u: np.ndarray,
    centre_v: np.ndarray,
    to_rows: np.ndarray,
) -> np.ndarray:
    """Which crop plants lie in a disease focus: irregular patches, denser at the centre."""
    h, w = params.height * params.gsd_m, params.width * params.gsd_m
    chance = np.zeros(centre_u.shape, np.float32)
    placed: list[np.ndarray] = []
    # Together the foci cover about a sixth of the field, however many there are.
    share = rng.uniform(0.13, 0.19) / max(params.disease_foci, 1)
    for _ in range(params.disease_foci):
        radius = math.sqrt(share * rng.uniform(0.8, 1.2) * h * w / math.pi)
        # Of a few candidate places, the one farthest from the other foci.
        options = rng.uniform(0.2, 0.8, (8, 2)) * np.array([w, h])
        spread = [min((np.hypot(*(o - p)) for p in placed), default=0.0) for o in options]
        placed.append(options[int(np.argmax(spread))])
        fu, fv = to_rows @ placed[-1]
        d = np.hypot(centre_u - fu, centre_v - fv) / radius
        edge = 1 + 0.25 * waves(rng, centre_u / radius, centre_v / radius, (0.8, 2.0))
        chance = np.maximum(chance, np.clip((edge + 0.2 - d) / 0.4, 0, 1))
    return rng.random(centre_u.shape) < chance


def generate_survey(params: SurveyParams, seed: int) -> Survey:
    """Draw a synthetic drone survey of a row crop field.

    Args:
        params: What to draw (see :class:`SurveyParams`; :func:`draw_params` makes
            random ones).
        seed: Seed of every random choice; the same parameters and seed give the
            same survey.

    Returns:
        The survey: image, labels matching the drawn pixels exactly, georeferencing.

    Raises:
        InputError: A parameter is out of range or the CRS is invalid.
    """
    crs = _check(params)
    soil_rng, crop_rng, weed_rng, disease_rng, camera_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    h, w, gsd = params.height, params.width, params.gsd_m
    shape = (h, w)
    x = ((np.arange(w, dtype=np.float32) + 0.5) * gsd)[None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) * gsd)[:, None]
    angle = math.radians(params.row_angle_deg)
    # Image y runs south, so the row direction (anticlockwise from east) flips its y.
    to_rows = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32
    )
    u = np.broadcast_to(to_rows[0, 0] * x + to_rows[0, 1] * y, shape).ravel()
    v = np.broadcast_to(to_rows[1, 0] * x + to_rows[1, 1] * y, shape).ravel()
    # Rows are sown slightly wavy.
    wavy = wave_field(crop_rng, (4.0, 12.0))
    # Rows bent along arcs: v shifts with the square of the distance from the middle.
    u_mid = 0.5 * float(u.min() + u.max())

    def bend(along: np.ndarray) -> np.ndarray:
        return (0.5 * params.row_curvature * (along - u_mid) ** 2).astype(np.float32)

    v = v - 0.02 * wavy(u, np.zeros(1, np.float32)) - bend(u)

    crop, crop_u, crop_v = _crop_plants(crop_rng, params, u, v)
    weeds, weed_colour, weed_kind = _weeds(weed_rng, params, u, v, crop.line0)
    sick = _diseased_plants(disease_rng, params, crop_u, crop_v, to_rows)

    crop_id, crop_depth, crop_across = _draw_plants(u, v, crop)
    weed_id, weed_depth, weed_across = _draw_plants(u, v, weeds)
    labels = np.full(h * w, SOIL, np.uint8)
    on_weed = weed_id >= 0
    on_crop = crop_id >= 0
    labels[on_weed] = WEED
    if params.weed_species:
        labels[on_weed] = _SPECIES_OF_KIND[weed_kind[weed_id[on_weed]]]
    labels[on_crop] = CROP
    labels[on_crop & sick[np.maximum(crop_id, 0)]] = DISEASED

    refl = _soil(soil_rng, params, u, v, crop).reshape(5, -1)
    vegetation = labels != SOIL
    # Shadows cast by the plants on the soil, away from a random sun.
    sun = soil_rng.uniform(0, 2 * math.pi)
    length = soil_rng.uniform(0.02, 0.05) / gsd
    shadow = shift_mask(
        vegetation.reshape(shape), round(length * math.sin(sun)), round(length * math.cos(sun))
    ).ravel()
    refl[:, shadow & ~vegetation] *= 0.7

    leaf_texture = value_noise(crop_rng, shape, gsd, 0.02).ravel()
    pix = np.flatnonzero(on_weed & ~on_crop)
    shade = 0.8 + 0.3 * (1 - weed_depth[pix]) - 0.1 * weed_across[pix]
    refl[:, pix] = weed_colour[:, weed_id[pix]] * (shade * (1 + 0.08 * leaf_texture[pix]))

    tone = crop_rng.uniform(0.88, 1.12, crop.radius.size).astype(np.float32)
    severity = crop_rng.uniform(0.0, 1.0, crop.radius.size).astype(np.float32)
    pix = np.flatnonzero(on_crop)
    ids = crop_id[pix]
    centre = (1 - crop_depth[pix]) ** 2
    # Midribs and leaf centres catch the light; young leaves at the heart are paler.
    shade = tone[ids] * (0.8 + 0.25 * (1 - crop_depth[pix]) - 0.12 * crop_across[pix])
    shade *= 1 + 0.08 * leaf_texture[pix]
    healthy = _CROP[:, None] + (_CROP_YOUNG - _CROP)[:, None] * (0.6 * centre)
    ill = _DISEASED[:, None] + (_DISEASED_BROWN - _DISEASED)[:, None] * severity[ids]
    lesion = value_noise(disease_rng, shape, gsd, max(0.015, 1.2 * gsd)).ravel()[pix] > 0.35
    ill = np.where(lesion, _LESION[:, None], ill)
    refl[:, pix] = np.where(sick[ids], ill, healthy) * shade

    image = _camera(camera_rng, params, refl.reshape(5, h, w))
    transform = Affine(gsd, 0.0, params.origin[0], 0.0, -gsd, params.origin[1])
    # The plants' true centres: undo the rows' waviness, then the rotation into rows.
    centre_v = (
        crop_v + 0.02 * wavy(crop_u.astype(np.float32), np.zeros(1, np.float32)) + bend(crop_u)
    )
    centre_x = to_rows[0, 0] * crop_u + to_rows[1, 0] * centre_v
    centre_y = to_rows[0, 1] * crop_u + to_rows[1, 1] * centre_v
    visible = np.bincount(crop_id[on_crop], minlength=crop.radius.size)
    plants = PlantTruth(
        x=params.origin[0] + centre_x,
        y=params.origin[1] - centre_y,
        radius_m=crop.radius.astype(np.float64),
        area_m2=visible * gsd * gsd,
        diseased=sick,
        inside=(centre_x >= 0) & (centre_x < w * gsd) & (centre_y >= 0) & (centre_y < h * gsd),
    )
    return Survey(image, labels.reshape(shape), transform, crs, params, plants)


def _soil(
    rng: np.random.Generator, params: SurveyParams, u: np.ndarray, v: np.ndarray, crop: _Plants
) -> np.ndarray:
    """Soil reflectance (5, H, W): texture, moisture, a tint and tramline wheel tracks."""
    shape = (params.height, params.width)
    gsd = params.gsd_m
    texture = fbm(rng, shape, gsd, (0.8, 0.25, 0.08, 0.03, 0.012)).ravel()
    wet = np.clip(fbm(rng, shape, gsd, (6.0, 2.0, 0.6)).ravel() * 2.5 + 0.1, 0, 1)
    tint = value_noise(rng, shape, gsd, 1.5).ravel()
    base = _SOIL * rng.uniform(0.8, 1.15) * rng.uniform(0.96, 1.04, 5).astype(np.float32)
    scalar = (1 + 0.25 * texture) * (1 - 0.4 * wet)
    refl = base[:, None] * scalar
    refl[0] *= 1 + 0.06 * tint
    refl[2] *= 1 - 0.06 * tint
    # Wheel tracks run along unsown rows: compacted, darker, with tread marks.
    line = np.floor((v - crop.line0) / crop.line_pitch + 0.5).astype(np.int64)
    row_empty = crop.radius.reshape(-1, crop.n_slots).max(axis=1) == 0
    on_track = row_empty[np.clip(line - crop.k0, 0, row_empty.size - 1)]
    off = np.abs(v - (crop.line0 + line * crop.line_pitch))
    half = 0.2 * crop.line_pitch
    track = on_track & (off < half)
    tread = 1 - 0.12 * (np.sin(2 * math.pi * u / 0.15) > 0.3)
    refl[:, track] *= 0.78 * tread[track]
    return refl


def _camera(rng: np.random.Generator, params: SurveyParams, refl: np.ndarray) -> np.ndarray:
    """Lighting, white balance, blur and noise; reflectance (5, H, W) to the output image."""
    h, w = refl.shape[1:]
    tilt = rng.uniform(-0.08, 0.08)
    direction = rng.uniform(0, 2 * math.pi)
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    light = params.brightness * (1 + tilt * (math.cos(direction) * xx + math.sin(direction) * yy))
    if params.multispectral:
        bands = refl * light
    else:
        gains = np.asarray(params.white_balance, np.float32)[:, None, None]
        display = np.clip(refl[:3] * light * _EXPOSURE * gains, 0, 1) ** _GAMMA
        grey = display.mean(axis=0, keepdims=True)
        bands = grey + _SATURATION * (display - grey)
    if params.blur_px > 0:
        bands = gaussian_blur(bands.astype(np.float32), params.blur_px)
    if params.noise > 0:
        # Reflectance noise is scaled to match a display noise of the same strength.
        sd = params.noise * (1.0 if not params.multispectral else 0.3)
        bands = bands + rng.normal(0, sd, bands.shape).astype(np.float32)
    if params.multispectral:
        return np.clip(np.rint(bands * 10000), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(bands * 255), 0, 255).astype(np.uint8)
