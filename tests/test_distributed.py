"""Several processes: the launcher's plumbing (fast), and a real 2-process gloo training on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from support import REPO, convert_test_photos, load_bench

from nailseg import cli, distributed
from nailseg.jobs import STATE_NAME, TrainingJobs, TrainRequest, _alive
from nailseg.paths import DEFAULT_CONFIG
from nailseg.serving import ModelStore
from nailseg.tabs import train as tab
from nailseg.train import build_config

OWNER = {"request": None, "profile": None}  # a private server: whoever opens the page is its owner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return convert_test_photos(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def private_server(monkeypatch):
    for var in ("SPACE_ID", "GRADIO_SERVER_NAME", "NAILSEG_AUTH", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "gpus", "backend", "wrapper"),
    [
        ("pytorch", 0, "gloo", dict(type="MMDistributedDataParallel", device_ids=None)),
        ("pytorch", 2, "nccl", None),  # mmengine's own: NCCL, DDP on GPU LOCAL_RANK
        ("slurm", 2, "nccl", None),
    ],
)
def test_configure(tiny, monkeypatch, launcher, gpus, backend, wrapper):
    monkeypatch.setattr(distributed, "gpu_count", lambda: gpus)
    cfg = build_config(DEFAULT_CONFIG, tiny, launcher=launcher)
    assert cfg.launcher == launcher
    assert cfg.env_cfg.dist_cfg.backend == backend
    got = cfg.get("model_wrapper_cfg")
    assert got == wrapper if wrapper is None else {k: got[k] for k in wrapper} == wrapper


@pytest.mark.parametrize(("launcher", "gpus", "message"), [("slurm", 0, "needs GPUs"), ("mpi", 0, "launcher must")])
def test_configure_refuses(tiny, monkeypatch, launcher, gpus, message):
    monkeypatch.setattr(distributed, "gpu_count", lambda: gpus)
    with pytest.raises(ValueError, match=message):
        build_config(DEFAULT_CONFIG, tiny, launcher=launcher)


def test_one_process_config_is_untouched(tiny):
    cfg = build_config(DEFAULT_CONFIG, tiny)
    assert cfg.get("launcher", "none") == "none" and cfg.get("model_wrapper_cfg") is None


@pytest.mark.parametrize("world", [1, 2, 3])
def test_an_epoch_is_shared_among_the_processes(tiny, world):
    cfg = build_config(DEFAULT_CONFIG, tiny, epochs=2, batch_size=1, world_size=world)
    n_train = len(json.loads((tiny / "train.json").read_text())["images"])
    assert cfg.train_cfg.max_iters == 2 * math.ceil(n_train / world)


@pytest.mark.parametrize(
    ("env", "launcher", "world", "rank"),
    [
        ({}, None, 1, 0),
        ({}, "pytorch", 1, 0),
        ({"WORLD_SIZE": "4", "RANK": "3"}, "pytorch", 4, 3),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}, "slurm", 8, 5),
    ],
)
def test_world_size_and_rank_from_the_environment(monkeypatch, env, launcher, world, rank):
    for var in ("WORLD_SIZE", "RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert distributed.world_size(launcher) == world and distributed.rank() == rank


# --- the launcher ------------------------------------------------------------------------------


def test_launch_hands_the_workers_to_torchrun(monkeypatch):
    from torch.distributed import run

    seen = []
    monkeypatch.setattr(run, "main", seen.append)
    monkeypatch.setattr(distributed, "gpu_count", lambda: 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv = ["train", "--data", "D", "--nproc", "2", "--cfg-options", "a=1"]
    assert distributed.launch(argv, 2) == 0
    # torchrun's own parser reads it as: 2 local workers running `python -m nailseg train --distributed ...`.
    args = run.parse_args(seen[0])
    assert args.standalone and args.nproc_per_node == "2" and args.module
    assert [args.training_script, *args.training_script_args] == ["nailseg", "train", "--distributed", *argv[1:]]
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, os.cpu_count() // 2))  # the cores shared among them


@pytest.mark.parametrize(("nproc", "gpus"), [(0, 0), (-1, 0), (3, 2)])
def test_impossible_process_counts_are_refused(tiny, tmp_path, monkeypatch, capsys, nproc, gpus):
    monkeypatch.setattr(distributed, "gpu_count", lambda: gpus)
    argv = ["train", "--data", str(tiny), "--work-dir", str(tmp_path / "w"), "--nproc", str(nproc)]
    assert cli.main(argv) == 2
    assert "--nproc must be" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# --- a real run: 2 CPU processes on gloo -------------------------------------------------------


@pytest.fixture(scope="module")
def probe(tiny, tmp_path_factory) -> dict:
    """Two iterations on 2 processes (one photo each per iteration), watched by support.ddp_probe."""
    tmp = tmp_path_factory.mktemp("ddp")
    work, out = tmp / "work", tmp / "probe"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + [str(REPO / "tests" / "support.py"), "ddp-probe", str(tiny), str(work), str(out), "2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return dict(work=work, weights=ranks, seen=seen, log=run.stdout + run.stderr)


@pytest.mark.slow
def test_two_processes_keep_identical_weights(probe):
    """Each rank trained on other photos, yet both hold the same weights: the gradients were averaged."""
    (r0, r1), (s0, s1) = probe["weights"], probe["seen"]
    assert len(s0["photos"]) == len(s1["photos"]) == 2 and set(s0["photos"]).isdisjoint(s1["photos"])
    assert r0["end"].keys() == r1["end"].keys()
    assert all(torch.equal(r0["end"][k], r1["end"][k]) for k in r0["end"])
    changed = [k for k in r0["end"] if not torch.equal(r0["start"][k], r0["end"][k])]
    assert any(k.startswith("roi_head.") for k in changed) and any(k.startswith("backbone.") for k in changed)


@pytest.mark.slow
def test_only_rank_0_writes(probe):
    from nailseg.weights import load_checkpoint

    written0, written1 = probe["seen"][0]["written"], probe["seen"][1]["written"]
    assert "iter_2.pth" in written0 and any(name.endswith(".log") for name in written0)
    assert written1 == []
    state = load_checkpoint(probe["work"] / "iter_2.pth")["state_dict"]
    assert all(torch.equal(state[k], probe["weights"][0]["end"][k]) for k in state)


@pytest.mark.slow
def test_export_of_a_distributed_run_is_just_the_model(probe, tmp_path):
    from nailseg.weights import export_weights, load_state_dict

    out = export_weights(probe["work"] / "iter_2.pth", tmp_path / "m.safetensors")
    config = json.loads(out.with_suffix(".json").read_text())
    assert "launcher" not in config and "model_wrapper_cfg" not in config
    assert load_state_dict(out).keys() == probe["weights"][0]["end"].keys()  # no DDP "module." prefix


@pytest.mark.slow
def test_nproc_resumes_a_distributed_run(probe, tiny):
    """`nailseg train --nproc 2 --resume` (through torchrun) takes the 2-process run on to 4 iterations."""
    work = probe["work"]
    run = subprocess.run(
        [sys.executable, "-m", "nailseg", "train", "--data", str(tiny), "--work-dir", str(work)]
        + ["--nproc", "2", "--batch-size", "1", "--resume"]
        + ["--cfg-options", "train_cfg.max_iters=4", "train_cfg.val_interval=4", "default_hooks.logger.interval=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "Iter(train) [1/4]" not in log and "Iter(train) [3/4]" in log and "Iter(train) [4/4]" in log
    assert log.count(f"checkpoint: {work / 'iter_4.pth'}") == 1  # printed by rank 0 alone
    newest = sorted(work.glob("*/*.log"))[-1].read_text()
    assert "Distributed training: True" in newest and "GPU number: 2" in newest
    assert "resumed" in newest.lower()
    assert (work / "iter_4.pth").is_file()


# --- the app: GPUs field, and stopping the workers ---------------------------------------------


def test_request_argv_passes_nproc():
    assert TrainRequest(data="/d", work_dir="/w", nproc=4).argv(python="py")[-2:] == ["--nproc", "4"]
    assert "--nproc" not in TrainRequest(data="/d", work_dir="/w", nproc=1).argv(python="py")


@pytest.mark.parametrize(("gpus", "visible", "maximum"), [(0, False, 1), (1, False, 1), (4, True, 4)])
def test_gpus_field_only_with_several_gpus(monkeypatch, gpus, visible, maximum):
    monkeypatch.setattr(tab, "gpu_count", lambda: gpus)
    update = tab.gpus_field()
    assert update["visible"] is visible and update["maximum"] == maximum


def test_device_note_names_the_gpus_from_torch(monkeypatch):
    monkeypatch.setattr(tab, "gpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Card{i}X")
    note = tab.device_note()
    assert "2 GPUs" in note and "0: Card0X" in note and "1: Card1X" in note
    monkeypatch.setattr(tab, "gpu_count", lambda: 0)
    assert "No GPU" in tab.device_note()


@pytest.mark.parametrize(("gpus", "asked", "nproc"), [(0, 2, None), (2, 3, None), (4, 4, 4), (4, 1, None)])
def test_start_passes_the_gpus_on(tmp_path, monkeypatch, tiny, gpus, asked, nproc):
    monkeypatch.setattr(tab, "gpu_count", lambda: gpus)
    monkeypatch.setattr(tab, "data_roots", lambda: (tiny.parent,))
    started = []
    on = tab.TrainHandlers(ModelStore(), TrainingJobs(tmp_path / "jobs"))
    monkeypatch.setattr(on.jobs, "start", lambda request: started.append(request) or tab.JobStatus())
    args = (next(iter(tab.CONFIGS)), tiny.name, None, None, 2, None, "")
    if asked > max(1, gpus):
        with pytest.raises(gr.Error, match="GPUs must be"):
            on.start(*args, **OWNER, gpus=asked)
        assert started == []
    else:
        on.start(*args, **OWNER, gpus=asked)
        assert started[0].nproc == nproc


def test_stop_reaches_workers_in_their_own_sessions(tmp_path):
    """torchrun starts each worker with start_new_session: stopping the job's group alone would miss them."""
    jobs = TrainingJobs(tmp_path)
    worker = tmp_path / "worker.pid"
    # A stand-in for torchrun: it starts a child in a new session and waits, as torchrun does.
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True); "
        f"open({str(worker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while not worker.is_file() or not worker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pid = int(worker.read_text())
    state = dict(pid=parent.pid, argv=[], work_dir=str(tmp_path / "w"), started=time.time(), stop_requested=False)
    (tmp_path / STATE_NAME).write_text(json.dumps(state))
    try:
        assert jobs.status().running
        jobs.stop(timeout=5)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(pid, check_cmdline=False) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid, check_cmdline=False)
    finally:
        parent.kill()
        if _alive(pid, check_cmdline=False):
            os.kill(pid, 9)


# --- prediction: folders, resume, shards ------------------------------------------------------


def test_find_photos_walks_folders(tmp_path):
    from nailseg.predict import find_photos

    for name in ("b/2.jpg", "b/deep/3.PNG", "a/1.jpeg", "a/notes.txt", "a/x.webp", "out/old_overlay.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    given = tmp_path / "a" / "notes.txt"  # named on the command line: taken as given
    found = find_photos([tmp_path, given, tmp_path / "b", tmp_path / "missing.jpg"], exclude=tmp_path / "out")
    rel = [str(Path(n).relative_to(tmp_path)) for n in found]
    assert rel == ["a/1.jpeg", "a/x.webp", "b/2.jpg", "b/deep/3.PNG", "a/notes.txt", "missing.jpg"]
    # Within the run: relative to the folder given first; a file given on its own by its name.
    assert list(found.values()) == ["a/1.jpeg", "a/x.webp", "b/2.jpg", "b/deep/3.PNG", "notes.txt", "missing.jpg"]
    assert find_photos([tmp_path / "empty"]) == {}


def test_plan_numbers_from_1_and_keeps_outputs_apart():
    """Issue 22: ``a.jpg``, ``a.png`` and ``a-2.jpg`` once shared the stem ``a-2``."""
    from nailseg.predict import plan

    photos = plan(["a.jpg", "a.png", "a-2.jpg", "x/a.jpg", "y/a.jpg", "a b.jpg", "a_b.jpg"])
    assert [p.image_id for p in photos] == list(range(1, 8))
    stems = [p.stem for p in photos]
    assert stems[:5] == ["a.jpg", "a.png", "a-2.jpg", "x/a.jpg", "y/a.jpg"]
    assert len(set(stems)) == 7 and "~" in stems[5] and stems[6] == "a_b.jpg"
    with pytest.raises(ValueError, match="would write the same output files"):
        plan({"x/a.jpg": "a.jpg", "y/a.jpg": "a.jpg"})  # two files of one name, given on their own


def test_no_two_photos_share_an_output_file_and_adding_one_renames_nothing(tmp_path):
    from nailseg.predict import find_photos, plan

    for name in ("a.jpg", "a.png", "a-2.jpg", "x/hand.jpg", "y/hand.jpg", "x/y/hand.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    before = {p.name: p.stem for p in plan(find_photos([tmp_path]))}
    assert len(set(before.values())) == 6
    files = [f"{stem}_overlay.png" for stem in before.values()] + [f"crops/{s}_1_box.png" for s in before.values()]
    assert len(set(files)) == 12
    for name in ("a-3.jpg", "0.jpg", "x/a.jpg", "hand.jpg"):  # sorted before and after the others
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    after = {p.name: p.stem for p in plan(find_photos([tmp_path]))}
    assert len(after) == 10 and len(set(after.values())) == 10
    assert {name: after[name] for name in before} == before


ONE_PIXEL = {"size": [1, 1], "counts": "01"}  # a 1x1 nail in pycocotools' RLE


def _entry(name, image_id, nails):
    result = dict(file_name=name, image_id=image_id, category_id=1, bbox=[0, 0, 1, 1], segmentation=ONE_PIXEL)
    results = [{**result, "score": 0.5 + k / 10} for k in range(nails)]
    rows = [{"photo": name, "nail": k + 1, "score": 0.5 + k / 10} for k in range(nails)]
    return dict(name=name, image_id=image_id, results=results, rows=rows, failed=False)


def test_merge_is_in_image_order_and_resume_renumbers(tmp_path, capsys):
    from nailseg import outputs
    from nailseg.predict import plan, previous_results, save_merged

    entries = [_entry("c.jpg", 3, 1), _entry("a.jpg", 1, 2), _entry("b.jpg", 2, 0)]
    save_merged(tmp_path, entries)
    assert [r["file_name"] for r in outputs.read_predictions(tmp_path)] == ["a.jpg", "a.jpg", "c.jpg"]
    assert [(r["photo"], r["nail"]) for r in outputs.read_crops_csv(tmp_path)] == [
        ("a.jpg", "1"),
        ("a.jpg", "2"),
        ("c.jpg", "1"),
    ]
    # A stopped --nproc run left a shard: b.jpg (no nails) and a failed photo that must be tried again.
    outputs.write_shard(tmp_path, 1, [_entry("b.jpg", 2, 0), {**_entry("d.jpg", 4, 0), "failed": True}])
    # Resumed with another list: a.jpg is now photo 2; gone.jpg was never there; old.jpg is left out.
    save_merged(tmp_path, [*entries, _entry("old.jpg", 4, 1)])
    kept = previous_results(tmp_path, plan(["new.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]))
    assert sorted(kept) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [r["image_id"] for r in kept["a.jpg"]["results"]] == [2, 2] and kept["c.jpg"]["image_id"] == 4
    assert len(kept["a.jpg"]["rows"]) == 2
    assert "1 photo(s) of the earlier run are not among the inputs" in capsys.readouterr().err
    assert previous_results(tmp_path / "nothing", plan(["a.jpg"])) == {}


def test_predict_without_photos_is_an_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert cli.main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert "no photo found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory) -> Path:
    """The six test photos in nested folders, one of them twice (same name), and a broken .jpg."""
    import shutil

    from support import PHOTOS

    root = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(PHOTOS):
        folder = root / ("a" if i % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)
    shutil.copy(PHOTOS[0], root / "a" / PHOTOS[0].name)  # the same name in two folders: two stems
    (root / "a" / "broken.jpg").write_bytes(b"not a photo")
    return root


def _predict(*args: str) -> subprocess.CompletedProcess:
    # One thread per process in every run: on a CPU the last digits of a score or box depend on
    # the number of threads that computed them, and these runs compare bytes.
    return subprocess.run(
        [sys.executable, "-m", "nailseg", "predict", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_process(photo_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    run = _predict(str(photo_tree), "--out", str(out), "--crop-size", "64")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "broken.jpg" in run.stderr
    return out


@pytest.mark.slow
def test_sharded_predict_equals_one_process(photo_tree, one_process, tmp_path):
    out = tmp_path / "out"
    run = _predict(str(photo_tree), "--out", str(out), "--crop-size", "64", "--nproc", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0:" in run.stdout and "rank 1:" in run.stdout  # both workers took a share
    one, sharded = _files(one_process), _files(out)
    assert sorted(sharded) == sorted(one)  # the same pictures, no shard left behind
    assert sharded["predictions.json"] == one["predictions.json"]
    assert sharded["crops.csv"] == one["crops.csv"]
    from nailseg.predict import find_photos, plan

    photos = plan(find_photos([photo_tree]))
    results = json.loads(one["predictions.json"])
    # Every photo but the broken one has nails, under its place in the sorted walk.
    assert {(r["image_id"], r["file_name"]) for r in results} == {
        (p.image_id, p.name) for p in photos if not p.name.endswith("broken.jpg")
    }
    assert len(photos) == 8 and len({p.stem for p in photos}) == 8


@pytest.mark.slow
def test_resume_skips_what_was_done(photo_tree, one_process, tmp_path):
    """A run stopped after 3 photos (2 in predictions.json, 1 in a worker's shard) is finished by --resume."""
    from nailseg import outputs
    from nailseg.predict import find_photos, plan

    out = tmp_path / "out"
    names = [p.name for p in plan(find_photos([photo_tree]))]
    results, rows = outputs.read_predictions(one_process), outputs.read_crops_csv(one_process)
    entries = [
        dict(
            name=name,
            image_id=i,
            results=[r for r in results if r["file_name"] == name],
            rows=[r for r in rows if r["photo"] == name],
            failed=False,
        )
        for i, name in enumerate(names, start=1)
    ]
    outputs.write_predictions(out, [r for e in entries[:2] for r in e["results"]])
    outputs.write_crops_csv(out, [r for e in entries[:2] for r in e["rows"]])
    outputs.write_shard(out, 0, [entries[3]])
    run = _predict(str(photo_tree), "--out", str(out), "--crop-size", "64", "--nproc", "2", "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resume: 3 photo(s) done before, 5 to go" in run.stderr
    assert all(f"{names[i]}:" not in run.stdout for i in (0, 1, 3))  # not segmented again
    assert (out / "predictions.json").read_bytes() == (one_process / "predictions.json").read_bytes()
    assert (out / "crops.csv").read_bytes() == (one_process / "crops.csv").read_bytes()
    assert not (out / outputs.SHARDS).exists()


def test_resume_after_adding_photos_keeps_every_earlier_output(tmp_path):
    """Issue 22: photos added to the folder, one sorted before the first and of the same stem
    (``a.jpg`` beside ``a.png``: once ``a`` took ``a.png``'s stem and overwrote its files), change no
    earlier photo's files, and every ``crops.csv`` row names files of its own."""
    import csv
    import shutil

    from support import PHOTOS

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    shutil.copy(PHOTOS[0], photos / "a.png")
    assert _predict(str(photos), "--out", str(out)).returncode == 0
    before = _files(out)
    first_rows = list(csv.DictReader((out / "crops.csv").open()))
    shutil.copy(PHOTOS[1], photos / "a.jpg")
    shutil.copy(PHOTOS[2], photos / "0.jpg")
    run = _predict(str(photos), "--out", str(out), "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    after = _files(out)
    rows = list(csv.DictReader((out / "crops.csv").open()))
    assert {row["photo"] for row in rows} == {str(photos / n) for n in ("a.png", "a.jpg", "0.jpg")}
    assert first_rows and [r for r in rows if r["photo"] == str(photos / "a.png")] == first_rows
    for row in first_rows:  # a.png's crops are still a.png's
        assert after[row["crop"]] == before[row["crop"]] and after[row["cutout"]] == before[row["cutout"]]
    assert all(row["crop"] in after and row["cutout"] in after for row in rows)
    assert len({row["crop"] for row in rows}) == len(rows)


def test_predict_says_how_long_its_photos_took_after_the_model_loaded(tmp_path):
    """bench/latency.py reads it: a time of its own, never a difference of two start-up-noisy runs."""
    from support import PHOTOS

    latency = load_bench("latency")
    photos = [str(p) for p in PHOTOS[:2]]
    seconds, count = latency.predict_seconds(None, [*photos, photos[0]], tmp_path / "out")  # one named twice
    assert 0 < seconds < 120 and count == 2
