"""``agriseg generate``: draw a synthetic drone survey with ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "generate",
        help="draw a synthetic georeferenced survey with labels (for trying agriseg out)",
        description="Draw a procedural row-crop orthomosaic with its label raster and label "
        "polygons: <stem>.tif, <stem>.labels.tif, <stem>.labels.gpkg, and the centre of every "
        "crop plant: <stem>.plants.gpkg. Seeded and reproducible.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the survey into")
    parser.add_argument("--stem", default="survey", help="file name stem (default survey)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=1024, help="edge in pixels (default 1024)")
    parser.add_argument(
        "--gsd", type=float, default=None, help="metres per pixel (default: drawn, 0.01-0.04)"
    )
    parser.add_argument(
        "--multispectral", action="store_true", help="5 bands: R, G, B, red edge, NIR (uint16)"
    )
    parser.add_argument(
        "--weed-species",
        action="store_true",
        help="label weeds by kind (soil, maize, grass_weed, broadleaf_weed, thistle; no disease)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    return parser


def execute(args: argparse.Namespace) -> int:
    from agriseg.learning.synthetic import draw_params, generate_survey, write_survey

    overrides: dict[str, object] = {"multispectral": args.multispectral}
    if args.weed_species:
        overrides.update(weed_species=True, disease_foci=0)
    if args.gsd is not None:
        overrides["gsd_m"] = args.gsd
    params = draw_params(args.seed, height=args.size, width=args.size, **overrides)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_survey(generate_survey(params, args.seed), args.out_dir, args.stem)
    if not args.quiet:
        print(f"survey   {paths.image}  ({params.gsd_m * 100:.1f} cm/px)")
        print(f"labels   {paths.labels}")
        print(f"polygons {paths.polygons}")
        print(f"plants   {paths.plants}")
    return 0
