"""The default score threshold belongs to the model: its config states it, every caller uses it.

A model's ``test_cfg.rcnn.default_score_thr`` (chosen by F1 on its validation split and recorded by
``nailseg export --choose-thr`` or ``--score-thr``) is what the library, ``nailseg predict``, the
app's slider and ``bench/user_view.py`` use unless a threshold is given; weights that state none
get 0.5.
"""

from __future__ import annotations

import json

import pytest
from support import DATA as TINY_DATA
from support import convert_test_photos, fake_checkpoint, weights_with

from nailseg import cli
from nailseg.images import load_image_rgb
from nailseg.inference import load_model
from nailseg.serving import ModelStore
from nailseg.weights import (
    BUNDLED_WEIGHTS,
    ENV_VAR,
    FALLBACK_SCORE_THR,
    ModelSettings,
    WeightsError,
    export_weights,
    record_score_thr,
)


def test_the_bundled_model_states_the_threshold_its_card_chose():
    config = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    chosen = ModelSettings.of(config["model"]).score_thr
    assert chosen != FALLBACK_SCORE_THR
    card = (BUNDLED_WEIGHTS.parent / "README.md").read_text()
    assert f"Default score threshold {chosen}" in card
    assert f"**The default threshold, {chosen}, is chosen by F1**" in card


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "0.8", True, [0.8]])
def test_a_config_with_a_threshold_out_of_range_is_refused(value):
    with pytest.raises(WeightsError, match=r"default_score_thr must be a number in \(0, 1\]"):
        ModelSettings.of({"test_cfg": {"rcnn": {"default_score_thr": value}}})


def test_weights_stating_none_get_the_fallback():
    assert ModelSettings.of({"test_cfg": {"rcnn": {"score_thr": 0.05}}}).score_thr == FALLBACK_SCORE_THR == 0.5
    assert ModelSettings.of({}).score_thr == FALLBACK_SCORE_THR


@pytest.fixture(scope="module")
def low(tmp_path_factory):
    """The bundled model, stating 0.3 as its default threshold."""
    return load_model(weights_with(tmp_path_factory.mktemp("low"), 0.3), device="cpu")


def test_predict_uses_the_models_own_threshold(low, photos, tmp_path):
    assert low.score_thr == 0.3
    assert load_model(weights_with(tmp_path, name="none"), device="cpu").score_thr == FALLBACK_SCORE_THR
    counts = []
    for photo in photos:
        rgb = load_image_rgb(photo)
        every = low.predict_all(rgb, min_score=0.3)
        by_default = low.predict(rgb)
        assert len(by_default) == len(every) and (by_default.scores >= 0.3).all()
        counts.append((len(by_default), len(low.predict(rgb, 0.9))))
    assert any(n_default > n_high for n_default, n_high in counts), counts  # the threshold did something


def test_predict_cli_defaults_to_the_models_threshold(low, tmp_path, photos):
    expected = sum(len(low.predict_all(load_image_rgb(p), min_score=0.3)) for p in photos[:3])
    out = tmp_path / "out"
    assert cli.main(["predict", *map(str, photos[:3]), "--out", str(out), "--weights", str(low.weights.weights)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == expected and min(r["score"] for r in results) >= 0.3


def test_predict_cli_refuses_a_threshold_out_of_range(tmp_path, photos, capsys):
    assert cli.main(["predict", str(photos[0]), "--out", str(tmp_path / "out"), "--score-thr", "1.5"]) == 2
    assert "--score-thr must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_records_the_threshold(tmp_path, capsys):
    checkpoint = fake_checkpoint(tmp_path / "iter_1.pth")
    out = tmp_path / "chosen.safetensors"
    assert cli.main(["export", str(checkpoint), "--out", str(out), "--score-thr", "0.7"]) == 0
    assert "--score-thr" not in capsys.readouterr().out  # no reminder when one was given
    assert load_model(out, device="cpu").score_thr == 0.7
    plain = export_weights(checkpoint, tmp_path / "plain.safetensors")
    assert ModelSettings.of(json.loads(plain.with_suffix(".json").read_text())["model"]).score_thr == FALLBACK_SCORE_THR
    assert cli.main(["export", str(checkpoint), "--out", str(tmp_path / "p2.safetensors")]) == 0
    assert "no --score-thr or --choose-thr" in capsys.readouterr().out
    assert cli.main(["export", str(checkpoint), "--out", str(tmp_path / "bad.safetensors"), "--score-thr", "0"]) == 2
    assert "must be a number in (0, 1], got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.safetensors").exists()


def test_the_apps_slider_starts_at_the_models_threshold_without_waiting(tmp_path, monkeypatch):
    weights = weights_with(tmp_path, 0.35)
    monkeypatch.setenv(ENV_VAR, str(weights))
    store = ModelStore()
    assert not store.ready and store.score_thr() == 0.35  # read from the config, nothing loaded
    assert not store.ready
    assert ModelStore("hf://someone/nails/model.safetensors").score_thr() == FALLBACK_SCORE_THR  # no download
    assert ModelStore(str(tmp_path / "missing.safetensors")).score_thr() == FALLBACK_SCORE_THR
    broken = tmp_path / "broken.safetensors"
    broken.with_suffix(".json").write_text('{"model": {"test_cfg": {"rcnn": {"default_score_thr": 7}}}}')
    assert ModelStore(str(broken)).score_thr() == FALLBACK_SCORE_THR  # loading it says what is wrong
    store.switch(str(BUNDLED_WEIGHTS))
    assert (
        store.score_thr()
        == store.current.score_thr
        == ModelSettings.of(json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())["model"]).score_thr
    )


def test_export_chooses_the_threshold_on_a_ground_truth(tmp_path, capsys):
    """`export --choose-thr GT.json` records what `nailseg evaluate` chooses on the same photos."""
    data = convert_test_photos(tmp_path / "data", valid_fraction=0)
    checkpoint = fake_checkpoint(tmp_path / "iter_1.pth")
    out = tmp_path / "chosen.safetensors"
    assert cli.main(["export", str(checkpoint), "--out", str(out), "--choose-thr", str(data / "train.json")]) == 0
    said = capsys.readouterr().out
    recorded = load_model(out, device="cpu").score_thr
    assert f"default score threshold {recorded}: best F1 on 6 photos of train.json" in said
    assert cli.main(["evaluate", "--ann-file", str(data / "train.json"), "--img-dir", str(TINY_DATA)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["score_thr"]["chosen_by_f1"] == recorded


def test_export_checks_the_ground_truth_before_writing(tmp_path, capsys):
    checkpoint = fake_checkpoint(tmp_path / "iter_1.pth")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "nail"}]}))
    out = tmp_path / "w.safetensors"
    for extra, message in [
        (["--choose-thr", str(empty)], "the photos of empty.json are not found"),
        (["--choose-thr", str(empty), "--img-dir", str(tmp_path)], "empty.json has no photos"),
        (["--choose-thr", str(empty), "--score-thr", "0.5"], "not both"),
    ]:
        assert cli.main(["export", str(checkpoint), "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_record_score_thr_rewrites_only_the_config(tmp_path):
    weights = weights_with(tmp_path)
    before = weights.read_bytes()
    record_score_thr(weights, 0.65)
    assert load_model(weights, device="cpu").score_thr == 0.65 and weights.read_bytes() == before
    with pytest.raises(WeightsError, match=r"must be a number in \(0, 1\], got 2"):
        record_score_thr(weights, 2)
    with pytest.raises(WeightsError, match="config missing.json cannot be read"):
        record_score_thr(tmp_path / "missing.safetensors", 0.5)
