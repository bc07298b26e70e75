"""Weights from the Hub, through the real ``huggingface_hub`` client and a fake Hub on 127.0.0.1.

``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` when it is imported, so every Hub
call runs in a fresh process with those set, as a user's would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_hub import FakeHub
from support import PHOTOS, AppProcess, free_port, label_count, weights_spec, weights_with

from nailseg import cli
from nailseg.publish import hub_files, model_card
from nailseg.weights import WeightsError

RESOLVE = """
import json, sys
from nailseg.weights import resolve_weights, HubUnreachable, WeightsError
try:
    r = resolve_weights(sys.argv[1])
    print(json.dumps({"weights": str(r.weights), "config": str(r.config), "source": r.source}))
except WeightsError as err:  # HubUnreachable included
    print(json.dumps({"error": type(err).__name__, "message": str(err)}))
"""


@pytest.fixture(scope="module")
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


@pytest.fixture
def hf_env(tmp_path, hub):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "NAILSEG_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env


def _resolve(spec: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", RESOLVE, spec], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- pure parts: which files go, and the card ------------------------------------------------


def test_model_card_names_the_spec_and_metrics():
    card = model_card("me/nails", "m.safetensors", {"coco/segm_mAP": 0.61234, "coco/bbox_mAP_50": 0.9})
    assert card.startswith("---\n") and "pipeline_tag: image-segmentation" in card
    assert "NAILSEG_WEIGHTS=hf://me/nails/m.safetensors" in card
    assert "| mask AP | 0.612 |" in card and "| box AP50 | 0.900 |" in card
    assert "`m.json`" in card


def test_model_card_states_the_default_threshold():
    assert "Default score threshold: 0.75, chosen by F1" in model_card("me/nails", "m.safetensors", score_thr=0.75)
    assert "states no default score threshold: NailSeg uses 0.5" in model_card("me/nails", "m.safetensors")


@pytest.mark.parametrize("metrics", [None, {}, {"loss": 1.0}])
def test_model_card_without_metrics_has_no_validation_table(metrics):
    assert "## Validation" not in model_card("me/nails", "m.safetensors", metrics)


def test_hub_files_picks_weights_config_and_card(tmp_path):
    weights = weights_with(tmp_path, name="m")
    (tmp_path / "m.json").rename(tmp_path / "m.json.away")
    with pytest.raises(WeightsError, match=r"config m\.json"):
        hub_files(weights, "me/nails")
    (tmp_path / "m.json.away").rename(tmp_path / "m.json")
    (tmp_path / "other.py").write_text("y = 2\n")
    names = [name for name, _ in hub_files(weights, "me/nails")]
    assert names == ["m.safetensors", "m.json", "README.md"]
    generated = dict(hub_files(weights, "me/nails"))["README.md"]
    assert isinstance(generated, bytes) and b"hf://me/nails/m.safetensors" in generated
    assert b"states no default score threshold" in generated
    weights_with(tmp_path, 0.8, name="m")
    assert b"Default score threshold: 0.8, chosen by F1" in dict(hub_files(weights, "me/nails"))["README.md"]
    (tmp_path / "README.md").write_text("# my card\n")
    assert dict(hub_files(weights, "me/nails"))["README.md"] == tmp_path / "README.md"  # the card beside wins


def test_hub_files_missing_weights():
    with pytest.raises(WeightsError, match="not found"):
        hub_files("/nonexistent/m.safetensors", "me/nails")


def pickled_pth(folder: Path) -> Path:
    """A pickled checkpoint with a valid ``.json`` config beside it: what push once uploaded."""
    import torch

    weights_with(folder, name="m")
    torch.save({"state_dict": {}}, folder / "m.pth")
    return folder / "m.pth"


def not_safetensors_inside(folder: Path) -> Path:
    weights = weights_with(folder, name="m")
    weights.write_bytes(b"w")
    return weights


def config_that_is_code(folder: Path) -> Path:
    weights = weights_with(folder, name="m")
    weights.with_suffix(".json").write_text("import os")
    return weights


def config_naming_os_system(folder: Path) -> Path:
    weights = weights_with(folder, name="m")
    config = weights.with_suffix(".json")
    config.write_text(config.read_text().replace('"MaskRCNN"', '"os.system"'))
    return weights


HUB_REFUSALS = {
    "a pickled .pth beside a .json": (pickled_pth, r"must be a \.safetensors file, got m\.pth"),
    "not safetensors inside": (not_safetensors_inside, r"m\.safetensors is not a readable safetensors file"),
    "a config that is code": (config_that_is_code, r"config m\.json is not standard JSON"),
    "a config naming os.system": (config_naming_os_system, r"m\.json: .*'os\.system' is not one this project builds"),
}


@pytest.mark.parametrize("make, message", HUB_REFUSALS.values(), ids=HUB_REFUSALS.keys())
def test_push_sends_safetensors_and_json_only(tmp_path, make, message, capsys):
    weights = make(tmp_path)
    with pytest.raises(WeightsError, match=message):
        hub_files(weights, "me/nails")
    # Refused before the Hub is contacted: no network, no token needed.
    assert cli.main(["push", "--repo-id", "me/nails", "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


# --- resolve_weights against the fake Hub ------------------------------------------------------


@pytest.mark.parametrize(("suffix", "revision"), [("", "main"), ("@v1", "v1")])
def test_resolve_downloads_into_the_hub_cache(hub, hf_env, suffix, revision):
    hub.repos["owner/repo"] = {"m.safetensors": b"\x00weights" * 100, "m.json": b"{}"}
    got = _resolve(f"hf://owner/repo{suffix}/m.safetensors", hf_env)
    cache = Path(hf_env["HF_HUB_CACHE"])
    assert Path(got["weights"]).is_relative_to(cache / "models--owner--repo" / "snapshots")
    assert Path(got["weights"]).read_bytes() == b"\x00weights" * 100
    assert Path(got["config"]).read_text() == "{}"
    assert ("GET", f"/owner/repo/resolve/{revision}/m.safetensors") in hub.requests
    assert ("GET", f"/owner/repo/resolve/{revision}/m.json") in hub.requests

    # Once cached, an unreachable Hub is no problem.
    offline = {**hf_env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    assert _resolve(f"hf://owner/repo{suffix}/m.safetensors", offline)["weights"] == got["weights"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hf://owner/repo/missing.safetensors", "missing.safetensors not found in Hub repo owner/repo"),
        ("hf://owner/repo/noconfig.safetensors", "noconfig.json not found in Hub repo owner/repo"),
        ("hf://owner/unknown/m.safetensors", "m.safetensors not found in Hub repo owner/unknown"),
        # A Python config is code: it is never fetched from the Hub, let alone run.
        ("hf://owner/pyonly/m.safetensors", "m.json not found in Hub repo owner/pyonly"),
    ],
)
def test_missing_files_are_errors_not_fallbacks(hub, hf_env, spec, message):
    hub.repos["owner/repo"] = {"m.safetensors": b"w", "m.json": b"{}", "noconfig.safetensors": b"w"}
    hub.repos["owner/pyonly"] = {"m.safetensors": b"w", "m.py": b"import os; os.system('touch /tmp/pwned')\n"}
    got = _resolve(spec, hf_env)
    assert got["error"] == "WeightsError"
    assert message in got["message"]


def test_unreachable_hub_is_hub_unreachable(hf_env):
    """Nothing cached and nothing listening: said at once (huggingface_hub alone retries for ~25 s)."""
    env = {**hf_env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    start = time.monotonic()
    got = _resolve("hf://owner/repo/m.safetensors", env)
    assert got["error"] == "HubUnreachable", got
    assert time.monotonic() - start < 15  # process start included


# --- nailseg push, then nailseg predict from the Hub -------------------------------------------


@pytest.fixture(scope="module")
def model_files() -> Path:
    """The bundled model (weights and their JSON config)."""
    return Path(weights_spec())


def test_push_then_predict_from_the_hub(hub, hf_env, model_files, tmp_path):
    repo_id = "me/nails"
    push = subprocess.run(
        [
            sys.executable,
            "-m",
            "nailseg",
            "push",
            "--repo-id",
            repo_id,
            "--weights",
            str(model_files),
            "--token",
            "hf_fake",
        ],
        env=hf_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert push.returncode == 0, push.stderr
    answer = json.loads(push.stdout)
    spec = f"hf://{repo_id}/{model_files.name}"
    assert answer["weights"] == spec
    stored = hub.repos[repo_id]
    assert stored[model_files.name] == model_files.read_bytes()
    assert stored[model_files.with_suffix(".json").name] == model_files.with_suffix(".json").read_bytes()
    assert "README.md" in stored
    assert ("POST", "/api/repos/create") in hub.requests

    out = tmp_path / "out"
    env = {**hf_env, "NAILSEG_WEIGHTS": spec}
    predict = subprocess.run(
        [sys.executable, "-m", "nailseg", "predict", str(PHOTOS[0]), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert predict.returncode == 0, predict.stderr
    assert ("GET", f"/{repo_id}/resolve/main/{model_files.name}") in hub.requests
    cached = list(Path(hf_env["HF_HUB_CACHE"]).glob(f"models--me--nails/snapshots/*/{model_files.name}"))
    assert len(cached) == 1 and cached[0].read_bytes() == model_files.read_bytes()
    assert spec in predict.stdout  # predict names the weights it used, and how they ran
    assert re.search(r"\((fp32|bf16) on cpu\)", predict.stdout), predict.stdout
    results = json.loads((out / "predictions.json").read_text())
    assert all(r["image_id"] == 1 and len(r["bbox"]) == 4 and "counts" in r["segmentation"] for r in results)
    # The downloaded weights are the trained model: about the labelled nails at its own threshold.
    assert abs(len(results) - label_count(PHOTOS[0])) <= 1


def test_push_to_an_unreachable_hub_says_so(hf_env, tmp_path):
    weights = weights_with(tmp_path, name="m")
    env = {**hf_env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    push = subprocess.run(
        [sys.executable, "-m", "nailseg", "push", "--repo-id", "me/x", "--weights", str(weights)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert push.returncode == 2
    assert "cannot reach the Hub" in push.stderr and "Traceback" not in push.stderr


def test_app_loads_its_weights_through_the_hub(hub, hf_env, model_files, tmp_path):
    """``NAILSEG_WEIGHTS=hf://...``: the app downloads through the Hub into the cache and segments."""
    from gradio_client import Client, handle_file

    repo_id = "nailseg/served"
    hub.add_folder(repo_id, model_files.parent, f"{model_files.stem}.*")
    hub.add_folder(repo_id, model_files.parent, "README.md")
    spec = f"hf://{repo_id}/{model_files.name}"
    unset = {k: None for k in [*os.environ, "HF_HUB_OFFLINE"] if k.startswith(("HF_", "HUGGING_FACE_"))}
    app = AppProcess(tmp_path, extra_env={**unset, **hf_env, "NAILSEG_WEIGHTS": spec})
    try:
        outputs = Client(app.url, verbose=False).predict(handle_file(str(PHOTOS[0])), 0.5, api_name="/segment")
        assert ("GET", f"/{repo_id}/resolve/main/{model_files.name}") in hub.requests
        cached = list(Path(hf_env["HF_HUB_CACHE"]).glob(f"models--nailseg--served/snapshots/*/{model_files.name}"))
        assert len(cached) == 1
        assert any(spec in str(out) for out in outputs), outputs  # the weights in use are shown
        per_nail = [
            out
            for out in outputs
            if isinstance(out, list) and out and isinstance(out[0], dict) and "box_xyxy" in out[0]
        ]
        assert len(per_nail) == 1, outputs
        assert [n["number"] for n in per_nail[0]] == list(range(1, len(per_nail[0]) + 1))
    finally:
        app.stop()


SECRET = "hf_SeCrEt0123456789abcdefghijklmnop"


def test_a_token_never_appears_in_messages(hub, hf_env, model_files, monkeypatch):
    """``$HF_TOKEN`` (a Space secret) is used for a push, and is not in what a refusal prints."""
    hub.echo_refusal = True
    try:
        push = subprocess.run(
            [sys.executable, "-m", "nailseg", "push", "--repo-id", "me/nails", "--weights", str(model_files)],
            env={**hf_env, "HF_TOKEN": SECRET},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        hub.echo_refusal = False
    assert push.returncode == 1 and "the Hub refused the upload" in push.stderr
    assert "403" in push.stderr and "***" in push.stderr  # the server's words, with the token blanked
    assert SECRET not in push.stdout + push.stderr
