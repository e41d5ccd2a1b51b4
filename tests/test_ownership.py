"""A run owns its output files: it lists them all in its summary, replaces the earlier
run's products as a whole, and never replaces or removes a file agriseg did not write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import field_image, write_raster

from agriseg.field.prescriptions import PRESCRIPTION_SUFFIXES
from agriseg.io.atomic import output_transaction
from agriseg.io.ownership import OUTPUT_SUFFIXES, PRESCRIPTION_KINDS, check_free, owned_outputs

FAST = ("--device", "cpu", "--quiet", "--tile-size", "128", "--overlap", "32")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def summary_of(out: Path, stem: str = "plot") -> dict:
    return json.loads((out / f"{stem}.summary.json").read_text())


@pytest.fixture
def survey(tmp_path: Path, run_cli) -> Path:
    """A generated survey ``same/plot.tif`` beside its truth, ``same/plot.plants.gpkg``."""
    folder = tmp_path / "same"
    assert run_cli("generate", folder, "--stem", "plot", "--size", "256", "--quiet") == 0
    return folder / "plot.tif"


def test_a_product_never_takes_the_name_of_a_file_agriseg_did_not_write(
    survey: Path, run_cli, capsys
) -> None:
    folder = survey.parent
    before = digests(folder)
    code = run_cli("run", survey, "--out", folder, "--plants", *FAST)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{folder / 'plot.plants.gpkg'}: exists and agriseg did not write it" in err
    assert digests(folder) == before  # refused before anything was written
    # Without --plants the run goes ahead; counting afterwards is refused the same way.
    assert run_cli("run", survey, "--out", folder, *FAST) == 0
    assert run_cli("plants", folder, "--quiet") == 2
    assert "plot.plants.gpkg: exists and agriseg did not write it" in capsys.readouterr().err
    assert digests(folder)["plot.plants.gpkg"] == before["plot.plants.gpkg"]
    assert not (folder / "plot.plants.json").exists()
    assert set(before) <= set(digests(folder))


def test_an_input_is_never_a_product(survey: Path, run_cli, capsys, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("run", survey, "--out", out, *FAST) == 0
    fields = out / "plot.health.gpkg"  # the earlier run's product, now this run's input
    before = digests(out)
    assert run_cli("run", survey, "--out", out, "--fields", fields, *FAST) == 2
    err = capsys.readouterr().err
    assert f"{fields}: is an input of this command, and its gpkg output would replace it" in err
    assert digests(out) == before


def test_a_rerun_replaces_the_earlier_products_as_a_whole(
    survey: Path, run_cli, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the farmer's own file")
    first = ("--format", "fgb", "--format", "gpkg", "--plants")
    assert run_cli("run", survey, "--out", out, *first, *FAST) == 0
    assert {"fgb", "plants_gpkg", "plants_json"} <= set(summary_of(out)["outputs"])
    assert run_cli("run", survey, "--out", out, "--no-preview", *FAST) == 0
    summary = summary_of(out)
    listed = summary["outputs"]
    assert set(listed) == {
        *("classes", "classes_aux", "classes_qml", "confidence", "summary"),
        *("geojson", "gpkg", "qml"),
    }
    assert "summed over every worker" in summary["timings_note"]
    # nothing stale: the folder holds this run's products and the user's file only
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed.values(), "notes.txt"])


def test_summary_lists_every_output_relative_to_the_output_folder(
    survey: Path, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = run_cli(
        "run", survey, "--out", "out", "--plants", "--prescribe", "--grid", "2",
        "--rate", "weed_pressure >= 0.05: 2 l/ha", "--rate", "otherwise: 0 l/ha", *FAST,
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "out"
    listed = summary_of(out)["outputs"]
    kinds = [
        "classes", "classes_aux", "classes_qml", "confidence", "summary",
        "geojson", "gpkg", "qml", "preview",
        "plants_gpkg", "plants_json", "prescription_gpkg", "spot_shp", "zones_shp", "taskdata",
        "prescription_json",
    ]  # fmt: skip
    assert listed == {kind: f"plot{OUTPUT_SUFFIXES[kind]}" for kind in kinds}
    assert sorted(p.name for p in out.iterdir()) == sorted(listed.values())
    # prescribing again without a rate table replaces the earlier prescriptions whole
    assert run_cli("prescribe", out, "--quiet") == 0
    listed = summary_of(out)["outputs"]
    assert "zones_shp" not in listed and "spot_shp" in listed
    assert sorted(p.name for p in out.iterdir()) == sorted(listed.values())


def test_a_failed_commit_keeps_what_it_would_have_replaced(tmp_path: Path) -> None:
    earlier = tmp_path / "plot.health.fgb"
    earlier.write_text("earlier run")
    new = tmp_path / "plot.health.gpkg"
    with pytest.raises(RuntimeError), output_transaction() as transaction:
        transaction.remove(earlier)
        transaction.stage(new).write_text("this run")
        raise RuntimeError("the run failed")
    assert earlier.read_text() == "earlier run" and not new.exists()
    with output_transaction() as transaction:
        transaction.remove(earlier)
        transaction.stage(new).write_text("this run")
    assert not earlier.exists() and new.read_text() == "this run"


def test_a_summary_cannot_claim_files_that_are_not_its_products(tmp_path: Path) -> None:
    write_raster(tmp_path / "plot.tif", field_image(16, 16))
    (tmp_path / "plot.classes.tif").write_text("not agriseg's")
    listed = {"classes": "plot.tif", "x": "../elsewhere.gpkg", "gpkg": "plot.health.gpkg"}
    (tmp_path / "plot.summary.json").write_text(
        json.dumps({"agriseg_version": "0", "outputs": listed})
    )
    # An earlier version's summary (no "summary" entry): its rasters came with it.
    assert owned_outputs(tmp_path, "plot") == {
        "gpkg": tmp_path / "plot.health.gpkg",
        "classes": tmp_path / "plot.classes.tif",
        "classes_aux": tmp_path / "plot.classes.tif.aux.xml",
        "classes_qml": tmp_path / "plot.classes.qml",
        "confidence": tmp_path / "plot.confidence.tif",
        "summary": tmp_path / "plot.summary.json",
    }
    (tmp_path / "plot.summary.json").write_text("{}")  # not an agriseg summary
    assert owned_outputs(tmp_path, "plot") == {}
    with pytest.raises(OSError, match="plot.classes.tif: exists and agriseg did not write it"):
        check_free(tmp_path, "plot", ("classes", "summary"))


def test_invalid_assume_crs_is_refused_when_the_file_has_a_crs(
    tmp_path: Path, run_cli, capsys
) -> None:
    image = write_raster(tmp_path / "f.tif", field_image(64, 64))  # EPSG:32633
    out = tmp_path / "out"
    assert run_cli("run", image, "--out", out, "--assume-crs", "EPSG:99999", *FAST) == 2
    assert "--assume-crs 'EPSG:99999' is not a valid CRS" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli("run", image, "--out", out, "--assume-crs", "EPSG:32631", *FAST) == 0
    warnings = summary_of(out, "f")["warnings"]
    assert any("has its own CRS (EPSG:32633), which was used: --assume-crs" in w for w in warnings)


def test_every_prescription_file_is_a_registered_product() -> None:
    # prescribe names its files itself; each must be a kind a summary can list
    registered = {OUTPUT_SUFFIXES[kind] for kind in PRESCRIPTION_KINDS}
    assert set(PRESCRIPTION_SUFFIXES.values()) == registered
