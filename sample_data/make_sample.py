"""Regenerate the sample survey in this folder: ``python sample_data/make_sample.py``."""

from __future__ import annotations

from pathlib import Path

from agriseg.synthetic import draw_params, generate_survey, write_survey

SEED = 7
SIZE = 512


def main() -> None:
    params = draw_params(SEED, height=SIZE, width=SIZE, gsd_m=0.02)
    write_survey(generate_survey(params, SEED), Path(__file__).parent, "field")


if __name__ == "__main__":
    main()
