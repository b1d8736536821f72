"""``edgeprune watch``: the window, drift, the gate, the versioned deploy folder and the faults of
an unattended loop (kill -9 mid-adapt, disk full while publishing, a corrupt image burst, two
watchers on one folder, SIGTERM). Every fault test ends by checking that ``current`` loads and
reproduces its recorded outputs (``reference.verify_version``).

The model is the 32-px Fashion-MNIST ResNet with random weights (research/source_models.py) and a
quick profile; each adaptation runs 2 steps, so a cycle takes a few seconds. A first version is
built once and copied for each test that needs one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_errors import assert_error, corrupt_corpus, get_runner, ok

import edgeprune.pipeline.publish
import edgeprune.watch.cycle
from edgeprune.errors import OutputError, UsageError
from edgeprune.models import zoo
from edgeprune.watch import history
from edgeprune.watch.drift import bn_input_stats, evaluate, reference_of
from edgeprune.watch.gate import shadow_gate
from edgeprune.watch.loop import run_rollback, run_watch, watch_status
from edgeprune.watch.options import WatchOptions
from edgeprune.watch.reference import REFERENCE_NAME, verify_version
from edgeprune.watch.rules import GateRules, Thresholds
from edgeprune.watch.versions import DeployFolder
from edgeprune.watch.window import WatchState, Window, decode_new, scan

RNG_SHIFTED = 99
OPEN_GATE = GateRules(min_agreement=0.0, min_gain=-1.0, max_kl_increase=float("inf"))


def put_images(folder: Path, n: int, start: int = 0, shifted: bool = False, seed: int = 0, age_s: float = 60.0) -> list[str]:
    """``n`` smooth 40-px PNGs (random 8x8 upsampled); ``shifted``: low contrast, brighter, noisy.
    Their mtime is set ``age_s`` in the past (complete files)."""
    rng = np.random.default_rng(seed + start + (RNG_SHIFTED if shifted else 0))
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        img = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((40, 40), Image.NEAREST))
        if shifted:  # low contrast, brighter, noisy
            img = np.clip(0.3 * img + 140 + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(img).save(path)
        t = time.time() - age_s
        os.utime(path, (t, t))
        names.append(path.name)
    return names


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # in-process cycles: no thread-count probe (the CLI's children get OMP_NUM_THREADS=1 too)
    before, threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # tiny convolutions: a second thread only waits on a shared CPU
    yield
    torch.set_num_threads(threads)
    if before is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = before


@pytest.fixture(scope="module")
def W(tmp_path_factory, random_fmnist_resnet):
    """Weights, profile and a deploy folder holding version 1 (adapted on 48 clean images)."""
    from edgeprune.latency.profiles import save_profile

    root = tmp_path_factory.mktemp("watch")
    save_profile(random_fmnist_resnet["profile"], root / "p.json")
    base = {"root": root, "weights": random_fmnist_resnet["weights"], "profile": root / "p.json"}
    put_images(root / "stream", 48)
    assert run_watch(options(base, root / "stream", root / "deploy")) == 0
    assert DeployFolder(root / "deploy").current().version == 1
    return base


def options(W, images: Path, deploy: Path, **kw) -> WatchOptions:
    # fp32 and the source statistics: no probes (adapt's own tests cover them); 2 steps
    args = dict(model="fmnist_resnet", weights=W["weights"], profile=W["profile"], blocks=2, steps=2, settle_s=1.0,
                once=True, min_new=16, min_adapt=32, window=96, gate=GateRules(min_agreement=0.0),
                recipe={"precision": "fp32", "teacher_stats": "source", "batch_size": 16})
    args.update(kw)
    return WatchOptions(images, deploy, **args)


@pytest.fixture
def deployed(W, tmp_path):
    """A copy of the module's stream and deploy folder (version 1 current), for one test."""
    shutil.copytree(W["root"] / "stream", tmp_path / "stream")
    shutil.copytree(W["root"] / "deploy", tmp_path / "deploy", symlinks=True)
    return tmp_path / "stream", tmp_path / "deploy"


def assert_current_intact(deploy: Path, version: int) -> None:
    cur = DeployFolder(deploy).current()
    assert cur.version == version
    assert os.readlink(deploy / "current") == f"versions/{version}"
    check = verify_version(cur.path)
    assert check["ok"] and check["images"] > 0 and check["onnx"]["passed"], check


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    runner = get_runner(tmp_path_factory)
    yield runner
    runner.close()  # idempotent: test_cli_errors.py's fixture closes the same runner


def alive(run) -> bool:
    return run.popen.poll() is None if run.popen is not None else not run.files["rc"].exists() and run._alive()


def leftovers(deploy: Path) -> list[str]:
    hidden = [p.name for p in (deploy / "versions").iterdir() if not p.name.isdigit()]
    return hidden + [p.name for p in deploy.glob(".*.tmp")] + [p.name for p in deploy.glob("building.json")]


# ====================================================================== the window
def test_new_complete_files_only_and_the_bounded_window(tmp_path):
    folder = tmp_path / "in"
    put_images(folder, 6)
    state, window = WatchState(), Window(capacity=8, resolution=32)
    now = time.time()
    names, px, skipped = decode_new(scan(folder, state, 2.0, now), state, 32, 0.875)
    assert names == [f"img{i:04d}.png" for i in range(6)] and px.shape == (6, 3, 32, 32) and skipped == []
    window.add(names, px)
    # a file still being written (fresh mtime) waits; a hidden temp file is never read
    put_images(folder, 1, start=6, age_s=0.0)
    (folder / ".img0007.png").write_bytes((folder / "img0000.png").read_bytes())
    found = scan(folder, state, 2.0, now)
    assert found.ready == [] and found.waiting == 1
    # unchanged for the settle time (two scans that far apart): complete now; old files are not read again
    found = scan(folder, state, 2.0, time.time() + 3.0)
    assert [n for n, _, _ in found.ready] == ["img0006.png"]
    names, px, _ = decode_new(found, state, 32, 0.875)
    window.add(names, px)
    # a file rewritten in place is new again and replaces its own window entry
    put_images(folder, 1, start=2, shifted=True)
    names, px, _ = decode_new(scan(folder, state, 2.0, time.time()), state, 32, 0.875)
    assert names == ["img0002.png"]
    window.add(names, px)
    assert window.names.count("img0002.png") == 1 and window.names[-1] == "img0002.png"
    # the window keeps the newest `capacity`; the folder keeps every file
    put_images(folder, 5, start=10)
    names, px, _ = decode_new(scan(folder, state, 2.0, time.time()), state, 32, 0.875)
    window.add(names, px)
    assert len(window) == 8 and window.names[-5:] == [f"img{i:04d}.png" for i in range(10, 15)]
    assert len(list(folder.glob("img*.png"))) == 12
    assert torch.equal(window.newest(3).pixels, window.pixels[-3:])


def test_a_file_changing_while_read_waits(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    put_images(folder, 2)
    state = WatchState()
    found = scan(folder, state, 2.0)
    real = edgeprune.watch.window.decode_image

    def growing(path, *a):  # the writer appends while we decode
        out = real(path, *a)
        if path.name == "img0001.png":
            with open(path, "ab") as f:
                f.write(b"\0")
        return out

    monkeypatch.setattr(edgeprune.watch.window, "decode_image", growing)
    names, _, _ = decode_new(found, state, 32, 0.875)
    assert names == ["img0000.png"] and "img0001.png" not in state.seen


# ====================================================================== drift and the gate
def test_drift_on_a_shifted_stream_and_not_on_an_unchanged_one(W, tmp_path):
    model, entry, _ = zoo.load_model("fmnist_resnet", weights=W["weights"])

    def pixels(shifted, seed):
        folder = tmp_path / f"s{int(shifted)}{seed}"
        put_images(folder, 96, shifted=shifted, seed=seed)
        st = WatchState()
        return decode_new(scan(folder, st, 0.0), st, 32, 0.875)[1]

    ref = reference_of(model, model, entry, pixels(False, 0), agreement=1.0)
    same = evaluate(model, model, entry, pixels(False, 1000), ref, Thresholds())
    shifted = evaluate(model, model, entry, pixels(True, 2000), ref, Thresholds())
    assert not same.drift and same.reasons == [] and same.bn_divergence < Thresholds().bn
    assert shifted.drift and shifted.bn_divergence > 5 * Thresholds().bn
    assert any("BatchNorm" in r for r in shifted.reasons) and len(shifted.moved_layers) == 3
    assert set(bn_input_stats(model, entry, pixels(False, 0)[:4])) == set(ref.bn)


def test_gate_rules_on_logits():
    torch.manual_seed(0)
    ref = torch.randn(200, 10)
    good, bad = ref + 0.1 * torch.randn(200, 10), torch.randn(200, 10)
    v = shadow_gate(ref, good, bad, ref, GateRules())
    assert v.passed and v.reasons == [] and v.candidate["agreement"] > 0.9
    v = shadow_gate(ref, bad, good, ref, GateRules())  # worse than the deployed model: refused
    assert not v.passed and any("not 0.01 above the deployed" in r for r in v.reasons)
    assert any("KL" in r for r in v.reasons) and any("below the floor" in r for r in v.reasons)
    assert shadow_gate(ref, good, None, ref, GateRules()).passed  # nothing deployed: the floor only
    assert not shadow_gate(ref, good, good, ref, GateRules()).passed  # no gain over an equal model: no churn
    assert not shadow_gate(ref[:0], good[:0], None, ref[:0], GateRules()).passed


def test_gate_refuses_a_worse_candidate_and_keeps_current(W, deployed, monkeypatch):
    stream, deploy = deployed
    real = edgeprune.watch.cycle.distil

    def sabotaged(prep, scored):  # a genuinely worse candidate: its distilled weights scrambled
        out = real(prep, scored)
        with torch.no_grad():
            for p in out.student.parameters():
                p.copy_(torch.randn_like(p))
        out.logits_after = edgeprune.watch.cycle.logits(out.student, prep.entry, prep.images.pixels[prep.held])
        return out

    monkeypatch.setattr(edgeprune.watch.cycle, "distil", sabotaged)
    put_images(stream, 48, start=100, shifted=True)
    seen = []
    assert run_watch(options(W, stream, deploy, gate=GateRules()), emit=seen.append) == 0
    rec = seen[-1]
    assert rec["action"] == "rejected" and rec["drift"]["drift"] and not rec["gate"]["passed"]
    assert any("deployed model" in r for r in rec["gate"]["reasons"])
    assert history.read(deploy)[-1]["action"] == "rejected" and "rejected:" in history.read(deploy)[-1]["reason"]
    assert_current_intact(deploy, 1)
    assert DeployFolder(deploy).complete_versions() == [1] and leftovers(deploy) == []


def test_a_rejected_first_candidate_is_not_retried_on_the_same_images(W, tmp_path):
    put_images(tmp_path / "stream", 40)
    deploy, seen = tmp_path / "deploy", []
    closed = GateRules(min_agreement=1.01)  # no candidate can pass
    run_watch(options(W, tmp_path / "stream", deploy, gate=closed), emit=seen.append)
    run_watch(options(W, tmp_path / "stream", deploy, gate=closed), emit=seen.append)
    assert [r["action"] for r in seen] == ["rejected", "wait"] and "below the floor" in seen[0]["reason"]
    assert DeployFolder(deploy).current() is None and DeployFolder(deploy).complete_versions() == []


# ====================================================================== versions
def test_promotion_pointer_keep_and_rollback(W, deployed):
    stream, deploy = deployed
    always = dict(thresholds=Thresholds(bn=-1.0), gate=OPEN_GATE, keep=2)
    for k in range(3):  # forced drift and an open gate: each cycle promotes
        put_images(stream, 40, start=200 + 40 * k)
        seen = []
        assert run_watch(options(W, stream, deploy, **always), emit=seen.append) == 0
        assert seen[-1]["action"] == "promoted" and seen[-1]["version"] == 2 + k
    folder = DeployFolder(deploy)
    assert folder.complete_versions() == [3, 4]  # --keep 2 pruned 1 and 2
    assert_current_intact(deploy, 4)
    current = json.loads((deploy / "current.json").read_text())
    assert current["path"] == "versions/4" and current["promoted"] == [3, 4]
    record = json.loads((deploy / "versions" / "4" / "watch.json").read_text())
    assert record["parent"] == 3 and record["adapted_on"]["images"] > 0 and record["gate"]["passed"]
    assert run_rollback(deploy)["to"] == 3
    assert_current_intact(deploy, 3)
    with pytest.raises(UsageError, match="nothing to roll back to"):
        run_rollback(deploy)
    assert [h["event"] for h in history.read(deploy)][-1] == "rollback"
    status = watch_status(deploy)
    assert status["current"] == 3 and status["current_check"]["ok"] and status["versions"] == [3, 4]


def test_verify_detects_a_changed_model(W, deployed):
    _, deploy = deployed
    path = deploy / "versions" / "1" / REFERENCE_NAME
    t = torch.load(path, weights_only=True)
    t["probe_logits"] = t["probe_logits"] + 1.0
    torch.save(t, path)
    assert not verify_version(deploy / "versions" / "1")["ok"]


# ====================================================================== faults
def test_disk_full_during_publish_leaves_current_intact(W, deployed, monkeypatch):
    stream, deploy = deployed

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(edgeprune.pipeline.publish, "save_manifest", full)
    put_images(stream, 48, start=300, shifted=True)
    seen = []
    with pytest.raises(OutputError, match="No space left on device"):
        run_watch(options(W, stream, deploy, gate=OPEN_GATE), emit=seen.append)
    assert seen[-1]["action"] == "failed" and "No space left" in seen[-1]["error"] and seen[-1]["current"] == 1
    assert history.read(deploy)[-1]["action"] == "failed"
    assert_current_intact(deploy, 1)
    assert DeployFolder(deploy).complete_versions() == [1] and leftovers(deploy) == []


def test_corrupt_image_burst_is_skipped_and_counted(W, deployed):
    stream, deploy = deployed
    reasons = corrupt_corpus(stream / "burst")
    for f in (stream / "burst").iterdir():  # complete files (written a minute ago)
        os.utime(f, (time.time() - 60, time.time() - 60))
    put_images(stream, 8, start=400)
    seen = []
    assert run_watch(options(W, stream, deploy, min_new=64), emit=seen.append) == 0
    rec = seen[-1]
    assert rec["skipped"] == len(reasons) and rec["new_images"] == 8 and rec["action"] == "wait"
    assert rec["skipped_total"] == len(reasons) and "empty" in rec["skipped_kinds"]
    again = []
    run_watch(options(W, stream, deploy, min_new=64), emit=again.append)  # taken once: not retried, not recounted
    assert again[-1]["skipped"] == 0 and again[-1]["skipped_total"] == len(reasons)
    assert_current_intact(deploy, 1)


def test_kill_9_mid_adapt_then_the_next_start_cleans_up(W, deployed, cli):
    stream, deploy = deployed
    put_images(stream, 48, start=500, shifted=True)
    run = cli.start("watch", "-i", stream, "-d", deploy, "-m", "fmnist_resnet", "--weights", W["weights"], "--profile",
                    W["profile"], "-k", "2", "--steps", "1000000", "--once",
                    "--min-new", "16", "--min-adapt", "32", "--window", "96", "--drift-threshold", "-1")
    deadline = time.monotonic() + 120
    while not list((deploy / "versions").glob(".2.tmp-*")):
        assert time.monotonic() < deadline and alive(run), run.stderr()[-2000:]
        time.sleep(0.1)
    time.sleep(1.5)  # well into the adaptation
    run.signal(signal.SIGKILL)
    run.wait(30)
    assert (deploy / "building.json").exists() and leftovers(deploy)  # half-done version 2 left behind
    assert_current_intact(deploy, 1)
    seen = []
    assert run_watch(options(W, stream, deploy, min_new=10_000), emit=seen.append) == 0
    recovered = [h for h in history.read(deploy) if h["event"] == "recovered"]
    assert recovered and recovered[-1]["interrupted_version"] == 2 and recovered[-1]["current_check"]["ok"]
    assert any(r.startswith("versions/.2.tmp-") for r in recovered[-1]["removed"])
    assert leftovers(deploy) == [] and DeployFolder(deploy).complete_versions() == [1]
    assert_current_intact(deploy, 1)


def test_two_watchers_on_one_folder_and_a_clean_sigterm(W, deployed, cli):
    stream, deploy = deployed
    args = ["-i", stream, "-d", deploy, "-m", "fmnist_resnet", "--weights", W["weights"], "--profile", W["profile"]]
    first = cli.start("watch", *args, "--interval", "3600", "--min-new", "10000")
    deadline = time.monotonic() + 120
    while not any(h.get("event") == "cycle" for h in history.read(deploy)[-1:]) or history.read(deploy)[-1].get("cycle") != 2:
        assert time.monotonic() < deadline, first.stderr()[-2000:]
        time.sleep(0.1)
    second = cli("watch", *args, "--once")
    assert_error(second, 6, "another edgeprune watch is running on", str(deploy), "one watcher per deploy folder")
    first.signal(signal.SIGTERM)
    res = first.wait(30)
    assert res.rc == 130 and "Traceback" not in res.err, res
    assert history.read(deploy)[-1]["event"] == "stopped"
    assert_current_intact(deploy, 1)
    ok(cli("watch", *args, "--once", "--min-new", "10000"))  # the lock went with the process


# ====================================================================== the command line
def test_cli_json_line_status_and_refusals(W, deployed, tmp_path, cli):
    stream, deploy = deployed
    put_images(stream, 4, start=600)
    res = ok(cli("watch", "-i", stream, "-d", deploy, "-m", "fmnist_resnet", "--weights", W["weights"], "--profile",
                 W["profile"], "--once", "--json"))
    line = json.loads(res.out.strip().splitlines()[-1])
    assert line["event"] == "cycle" and line["new_images"] == 4 and line["action"] == "wait" and line["current"] == 1
    status = ok(cli("watch", "-d", deploy, "--status", "--json"))
    assert json.loads(status.out)["current_check"]["ok"]
    assert "current version 1 (loads" in ok(cli("watch", "-d", deploy, "--status")).out
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    res = cli("watch", "-i", stream, "-d", user, "-m", "fmnist_resnet", "--weights", W["weights"], "--profile", W["profile"], "--once")
    assert_error(res, 6, "not made by edgeprune watch")
    assert sorted(os.listdir(user)) == ["thesis.txt"]
    assert_error(cli("watch", "-d", deploy, "--rollback"), 2, "nothing to roll back to")
    assert_error(cli("watch", "-d", deploy), 2, "--images is required")


# ====================================================================== the scenario's goal checks
def test_scenario_goals_say_met_and_missed():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        from watch_scenario import goals
    finally:
        sys.path.pop(0)

    def row(phase, chunk, action, before, after, source=0.5, wall=10.0):
        return {"phase": phase, "chunk": chunk, "action": action, "acc_before": before, "acc_after": after,
                "acc_source": source, "wall_s": wall}

    good = [row(0, 0, "promoted", None, 0.9), row(0, 1, "none", 0.9, 0.9), row(1, 0, "promoted", 0.4, 0.8), row(1, 1, "none", 0.8, 0.8)]
    g = goals(good)
    assert g["adapts_exactly_at_drift_points"]["met"] and g["promoted_beats_replaced"]["met"]
    assert g["promoted_not_below_source"]["met"] and g["time_per_cycle_s"]["max"] == 10.0
    bad = [row(0, 0, "promoted", None, 0.9), row(0, 1, "rejected", 0.9, 0.9), row(1, 0, "promoted", 0.8, 0.7, source=0.75)]
    g = goals(bad)
    assert not g["adapts_exactly_at_drift_points"]["met"] and not g["promoted_beats_replaced"]["met"]
    assert not g["promoted_not_below_source"]["met"]


def test_registering_watch_keeps_torch_out_of_cli_start_up():
    # adapt sets OMP_WAIT_POLICY before torch loads (cli/adapt_command.py); the watch command must not load torch first
    import subprocess
    import sys

    code = "import sys, edgeprune.cli; assert 'torch' not in sys.modules, 'torch imported by the CLI module'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
