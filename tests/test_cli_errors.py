"""The command line on bad input: each case runs ``edgeprune`` as a separate process and checks the
exit code, that stderr has exactly one ``error:`` line naming the problem and what to do (no
traceback), and what is left on disk.

Exit codes (edgeprune/errors.py):

    0    success (warnings, if any, are printed and recorded in report.json)
    2    UsageError: bad option values (--steps/--batch/--lr <= 0, -k out of range,
         unreachable --target-saving / --latency-budget-ms); click's own usage errors too
    3    ModelError: unknown model (close names suggested), weights for another
         architecture, a weights file that is not a plain tensor state dict (pickled code)
    4    ImageError: image folder missing / empty / too few usable images
    5    ProfileError: profile missing, corrupted or truncated JSON, other schema version,
         for another model / device / blocks, invalid values
    6    OutputError: output is a file, not empty without --force, locked by another run,
         cannot be written (disk full, read-only)
    7    BackendUnavailable: TensorRT / CUDA / onnxruntime-gpu not installed here
    8    ExportError: ONNX export or parity failed (model.pt and report.json still published)
    9    BackendError: a TensorRT step failed, or an engine built for another device was given
    70   internal error (a bug: rerun with --debug for the traceback)
    130  interrupted by SIGINT / SIGTERM: nothing partial left, earlier output intact

How the CLI is run: importing torch costs ~2 s of CPU per process, which dozens of cases cannot
afford on a shared 2-core machine. So by default each case is a process *forked* from a helper
process that imported edgeprune (and torch) once; the child then runs ``edgeprune.cli.main()``
with the case's argv, cwd and environment, stdout/stderr going to files, and its exit status is
what main() exits with -- the same code path as ``python -m edgeprune.cli``. The signal tests in
test_faults.py use real ``python -m edgeprune.cli`` / ``edgeprune`` processes, and
``EDGEPRUNE_TEST_CLI=subprocess`` runs every case that way (slower).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

RES = 32
CLI_MODE = os.environ.get("EDGEPRUNE_TEST_CLI", "fork")  # "fork" | "subprocess"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # 2 shared cores: no thread oversubscription


# ====================================================================== running the CLI
_ZYGOTE = textwrap.dedent(
    r"""
    import json, os, signal, sys, traceback
    import edgeprune.cli, edgeprune.pipeline.adapt, edgeprune.latency.profiles, edgeprune.pipeline.evaluate_folder, edgeprune.pipeline.export_manifest, edgeprune.deploy.onnx_export
    import onnx, onnxruntime  # what the commands import lazily
    from edgeprune.compat import import_torchvision
    import_torchvision()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    os.write(1, b"ready\n")
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid:
            os.write(1, b"%d\n" % pid)
            continue
        code = 70
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                f = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sys.argv = ["edgeprune", *req["argv"]]
            try:
                edgeprune.cli.main()
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
        except BaseException:
            traceback.print_exc()  # shows up as "Traceback" in the case's stderr
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                with open(req["rc"] + ".tmp", "w") as f:
                    f.write(str(code))
                os.replace(req["rc"] + ".tmp", req["rc"])
                os._exit(code & 0xFF)
    """
)


@dataclass
class CliResult:
    argv: list
    rc: int | None
    out: str
    err: str

    def __repr__(self):  # shown by pytest when an assertion fails
        return f"CliResult(rc={self.rc}, argv={self.argv!r}\n--- stderr ---\n{self.err[-3000:]}\n--- stdout ---\n{self.out[-1500:]})"


class Running:
    """One CLI process: ``pid``, ``signal(sig)``, ``stderr()``, ``wait(timeout) -> CliResult``."""

    def __init__(self, argv, pid, files, popen=None):
        self.argv, self.pid, self.files, self.popen = argv, pid, files, popen

    def stderr(self) -> str:
        return self.files["stderr"].read_text(errors="replace")

    def signal(self, sig) -> None:
        os.kill(self.pid, sig)

    def _alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float = 180) -> CliResult:
        deadline = time.monotonic() + timeout
        rc = None
        if self.popen is not None:
            try:
                rc = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                pytest.fail(f"edgeprune {' '.join(self.argv)} did not finish in {timeout} s")
        else:
            rc_file = self.files["rc"]
            while not rc_file.exists():
                if not self._alive():
                    break
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    pytest.fail(f"edgeprune {' '.join(self.argv)} did not finish in {timeout} s")
                time.sleep(0.02)
            rc = int(rc_file.read_text()) if rc_file.exists() else None  # None: died without exiting
        return CliResult(self.argv, rc, self.files["stdout"].read_text(errors="replace"), self.stderr())


class CliRunner:
    def __init__(self, workdir: Path, mode: str = CLI_MODE):
        self.workdir, self.mode, self.n = workdir, mode, 0
        self.zygote = None
        self.children: list[Running] = []

    def _files(self) -> dict:
        self.n += 1
        d = self.workdir / f"call{self.n:03d}"
        d.mkdir(parents=True)
        return {"stdout": d / "stdout", "stderr": d / "stderr", "rc": d / "rc"}

    def _env(self, env) -> dict:
        return {**os.environ, **CHILD_ENV, **(env or {})}

    def start(self, *argv, cwd=None, env=None, real: str | None = None) -> Running:
        """Start ``edgeprune ARGV``. ``real``: "module" (python -m edgeprune.cli) or "script" (the
        ``edgeprune`` entry point) for a genuine new interpreter, whatever the mode."""
        argv = [str(a) for a in argv]
        files = self._files()
        cwd = str(cwd or self.workdir)
        if real or self.mode == "subprocess":
            script = Path(sys.executable).with_name("edgeprune")
            exe = (str(script) if script.is_file() else shutil.which("edgeprune")) if real == "script" else None
            cmd = [exe, *argv] if exe else [sys.executable, "-m", "edgeprune.cli", *argv]
            reset = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # e.g. run from a background job
            with files["stdout"].open("w") as out, files["stderr"].open("w") as err:
                popen = subprocess.Popen(cmd, cwd=cwd, env=self._env(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if reset else None)
            run = Running(argv, popen.pid, files, popen)
        else:
            if self.zygote is None:
                self.zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               env=self._env(None), cwd=str(self.workdir), text=True, bufsize=1)
                assert self.zygote.stdout.readline().strip() == "ready", "the CLI fork helper did not start"
            req = {"argv": argv, "cwd": cwd, "env": self._env(env), **{k: str(v) for k, v in files.items()}}
            self.zygote.stdin.write(json.dumps(req) + "\n")
            pid = int(self.zygote.stdout.readline())
            run = Running(argv, pid, files)
        self.children.append(run)
        return run

    def __call__(self, *argv, timeout: float = 180, **kw) -> CliResult:
        return self.start(*argv, **kw).wait(timeout)

    def close(self) -> None:
        for run in self.children:  # nothing of ours keeps running after the tests
            if run.popen is not None:
                if run.popen.poll() is None:
                    run.popen.kill()
                    run.popen.wait()
            elif not run.files["rc"].exists() and run._alive():
                os.kill(run.pid, signal.SIGKILL)
        self.children.clear()
        if self.zygote is not None:
            self.zygote.stdin.close()
            try:
                self.zygote.wait(10)
            except subprocess.TimeoutExpired:
                self.zygote.kill()
                self.zygote.wait()
            self.zygote = None


# ====================================================================== shared tiny setup
_SHARED: dict = {}  # built once per session, also used by test_faults.py


def png_stream(root: Path, n: int, classes: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((40, 40), Image.NEAREST).save(d / f"img{i:03d}.png")
    return root


def corrupt_corpus(folder: Path) -> dict[str, str]:
    """Bad files next to good ones: file name -> the word its skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.png").write_bytes(b"")
    png = _png_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "noise.png").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"zero.png": "empty", "truncated.png": "truncated", "notes.jpg": "not", "noise.png": "not"}


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def shared_setup(tmp_path_factory) -> dict:
    """resnet18 with random weights as a state dict, a torch-backend profile at resolution 32,
    a 20-image stream in class folders. Built once per session."""
    if "profile" not in _SHARED:
        from edgeprune.latency.measurement import run_profile
        from edgeprune.latency.profiles import save_profile
        from edgeprune.models import zoo

        root = tmp_path_factory.mktemp("cli")
        torch.manual_seed(0)
        model, _, _ = zoo.load_model("resnet18", weights="random")
        torch.save(model.state_dict(), root / "resnet18.pt")
        prof = run_profile("resnet18", backend="torch", resolution=RES, budget_s=0.5, warmup_s=0.1, min_repeats=3,
                           max_repeats=40, threads=1)
        save_profile(prof, root / "resnet18-r32.json")
        _SHARED.update(root=root, weights=root / "resnet18.pt", profile=root / "resnet18-r32.json",
                       profile_dict=prof, stream=png_stream(root / "stream", 20))
    return _SHARED


def get_runner(tmp_path_factory) -> CliRunner:
    if "runner" not in _SHARED:
        _SHARED["runner"] = CliRunner(tmp_path_factory.mktemp("cli-runs"))
    return _SHARED["runner"]


@pytest.fixture(scope="session")
def S(tmp_path_factory):
    return shared_setup(tmp_path_factory)


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    runner = get_runner(tmp_path_factory)
    yield runner
    runner.close()  # idempotent: test_faults.py's fixture closes the same runner


# ====================================================================== helpers
def adapt_args(S, images, out, *extra, profile=None, plan=("-k", "2")):
    return ["adapt", "-i", images, "-m", "resnet18", "--weights", S["weights"], "--profile", profile or S["profile"],
            *plan, "--prune-images", "4", "--finetune-images", "8", "--steps", "1", "--batch", "4", "--no-latency",
            "-o", out, *extra]


def profile_variant(S, path: Path, edit) -> Path:
    data = json.loads(json.dumps(S["profile_dict"]))
    edit(data)
    path.write_text(json.dumps(data, indent=2))
    return path


def error_line(res: CliResult) -> str:
    lines = [ln for ln in res.err.splitlines() if ln.startswith(("error:", "internal error:"))]
    assert len(lines) == 1, res
    return lines[0]


def assert_error(res: CliResult, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line holding every needle (case-insensitive)."""
    assert res.rc == code, res
    assert "Traceback" not in res.err and "Traceback" not in res.out, res
    line = error_line(res)
    assert line.startswith("error: "), res
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def leftovers(out: Path) -> list[str]:
    """What a run left next to ``out``: its temp folders, lock, backups."""
    parent = out.parent
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}.")) if parent.is_dir() else []


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was created"
    assert leftovers(out) == []


def ok(res: CliResult) -> CliResult:
    assert res.rc == 0 and "Traceback" not in res.err, res
    return res


# ====================================================================== bad images
def test_images_empty_folder(S, cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli(*adapt_args(S, tmp_path / "empty", tmp_path / "o"))
    assert_error(res, 4, "no images", str(tmp_path / "empty"), "point --images at")
    assert_nothing_written(tmp_path / "o")


def test_images_missing_folder(S, cli, tmp_path):
    res = cli(*adapt_args(S, tmp_path / "nowhere", tmp_path / "o"))
    assert_error(res, 4, "image folder not found", "nowhere", "pass the folder")
    assert_nothing_written(tmp_path / "o")


def test_images_path_with_markup_characters_is_printed_verbatim(S, cli, tmp_path):
    # rich would read "[/x]" as a closing tag (a MarkupError traceback before the fix)
    missing = tmp_path / "cam[/x]" / "[bold]frames"
    res = cli(*adapt_args(S, missing, tmp_path / "o"))
    assert_error(res, 4, "image folder not found", "cam[/x]/[bold]frames")


def test_images_too_few_usable(S, cli, tmp_path):
    folder = png_stream(tmp_path / "few", 5)
    for i in range(10):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(64) if i % 2 else b"")
    res = cli(*adapt_args(S, folder, tmp_path / "o"))
    assert_error(res, 4, "only 5 usable images", "10 skipped", "need at least 16", "add more images")
    assert_nothing_written(tmp_path / "o")


def test_images_corrupt_files_are_skipped_and_listed(S, cli, tmp_path):
    stream = tmp_path / "stream"
    shutil.copytree(S["stream"], stream)
    expected = corrupt_corpus(stream / "class0")
    out = tmp_path / "o"
    res = ok(cli(*adapt_args(S, stream, out)))
    assert "warning: skipped 4 unusable file(s)" in res.err
    report = json.loads((out / "report.json").read_text())
    skipped = {Path(d["path"]).name: d["reason"] for d in report["images"]["skipped"]}
    assert set(skipped) == set(expected), skipped
    for name, word in expected.items():
        assert word in skipped[name].lower(), (name, skipped[name])
    assert report["images"]["usable"] == 20 and report["images"]["found"] == 24
    assert {"model.pt", "model.onnx", "report.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert leftovers(out) == []


def test_eval_bad_folders(S, cli, tmp_path):
    base = ["eval", "-m", "resnet18", "--weights", S["weights"], "--resolution", RES, "--no-latency"]
    assert_error(cli(*base, "-i", tmp_path / "nowhere"), 4, "image folder not found")
    bad = tmp_path / "bad"
    corrupt_corpus(bad)
    assert_error(cli(*base, "-i", bad), 4, "only 0 usable images", "4 skipped", "fix the skipped ones")


# ====================================================================== bad configuration
def test_unknown_model_suggests_close_names(S, cli, tmp_path):
    line = assert_error(cli(*adapt_args(S, S["stream"], tmp_path / "o"), "-m", "resnet19"), 3, "unknown model 'resnet19'",
                        "did you mean", "resnet18")
    assert "profile" not in line  # the model is checked before the profile is compared
    assert_error(cli("profile", "-m", "mobilnet_v2"), 3, "unknown model", "mobilenet_v2")
    assert_nothing_written(tmp_path / "o")


@pytest.fixture(scope="module")
def other_arch_weights(tmp_path_factory):
    from edgeprune.models import zoo

    path = tmp_path_factory.mktemp("w") / "mobilenet_v2.pt"
    torch.save(zoo.load_model("mobilenet_v2", weights="random")[0].state_dict(), path)
    return path


def test_weights_for_another_architecture(S, cli, tmp_path, other_arch_weights):
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o"), "--weights", other_arch_weights)
    assert_error(res, 3, "does not fit this architecture", "missing (e.g. conv1.weight", "unexpected (e.g. features.",
                 "another model")
    assert_nothing_written(tmp_path / "o")


class _Payload:
    """Unpickling this runs os.mkdir(marker): code execution, the thing weights_only=True refuses."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_weights_pickle_with_code_is_refused_and_never_runs(S, cli, tmp_path, fmt):
    def write(path, marker):
        obj = {"conv1.weight": torch.zeros(1), "x": _Payload(marker)}
        if fmt == "torch.save":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=2))

    # the payload is live: an unsafe load runs it
    write(tmp_path / "probe.pt", tmp_path / "probe-ran")
    if fmt == "torch.save":
        torch.load(tmp_path / "probe.pt", weights_only=False)
    else:
        pickle.loads((tmp_path / "probe.pt").read_bytes())
    assert (tmp_path / "probe-ran").is_dir()

    marker = tmp_path / "payload-ran"
    write(tmp_path / "evil.pt", marker)
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o"), "--weights", tmp_path / "evil.pt")
    assert_error(res, 3, "refused to load", "evil.pt", "not a plain tensor state dict", "weights_only=True")
    assert not marker.exists(), "the pickled code ran"
    assert_nothing_written(tmp_path / "o")


def _other_device(p):
    p["device_slug"] = "cpu-other-robot-cpu-64c"
    p["device"] = {**p["device"], "cpu": "Other Robot CPU", "logical_cores": 64}


PROFILE_CASES = {
    "other-model": (lambda p: p.update(model="resnet34"), ["for model resnet34, not resnet18", "field: model", "edgeprune profile --model resnet18"]),
    "invalid-resolution": (lambda p: p.update(resolution=4), ["field 'resolution'", "re-run `edgeprune profile`"]),
    "other-blocks": (lambda p: p["blocks"].pop(0), ["no saving for block(s) layer1.0", "field: blocks", "re-run `edgeprune profile`"]),
    "other-device": (_other_device, ["measured on cpu-other-robot-cpu-64c", "field: device", "--allow-device-mismatch"]),
    "newer-schema": (lambda p: p.update(schema_version=2), ["schema version 2, newer", "upgrade edgeprune"]),
    "older-schema": (lambda p: p.update(schema_version=0), ["schema version 0, older", "re-run `edgeprune profile`"]),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_profile_mismatch_or_invalid(S, cli, tmp_path, case):
    edit, needles = PROFILE_CASES[case]
    prof = profile_variant(S, tmp_path / "p.json", edit)
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o", profile=prof))
    assert_error(res, 5, *needles)
    assert_nothing_written(tmp_path / "o")


@pytest.mark.parametrize("damage", ["corrupted", "truncated", "empty"])
def test_profile_damaged_json(S, cli, tmp_path, damage):
    text = S["profile"].read_text()
    bad = {"corrupted": text[:300] + "\x00@@ garbage @@" + text[300:], "truncated": text[: len(text) // 2], "empty": ""}[damage]
    (tmp_path / "p.json").write_text(bad)
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o", profile=tmp_path / "p.json"))
    what = {"corrupted": "not valid JSON (corrupted", "truncated": "not valid JSON (truncated", "empty": "is empty"}[damage]
    assert_error(res, 5, str(tmp_path / "p.json"), what, "re-run `edgeprune profile`")
    assert_nothing_written(tmp_path / "o")


def test_device_mismatch_allowed_is_a_warning(S, cli, tmp_path):
    prof = profile_variant(S, tmp_path / "p.json", _other_device)
    out = tmp_path / "o"
    res = ok(cli(*adapt_args(S, S["stream"], out, "--allow-device-mismatch", profile=prof)))
    assert "warning: the latency profile was measured on cpu-other-robot-cpu-64c" in res.err
    report = json.loads((out / "report.json").read_text())
    assert any("cpu-other-robot-cpu-64c" in w and "savings may not hold" in w for w in report["warnings"])


USAGE_CASES = {
    "k-too-large": (["-k", "5"], ["--blocks must be between 1 and 4", "5 removable blocks"]),
    "k-zero": (["-k", "0"], ["--blocks must be at least 1, got 0"]),
    "k-negative": (["-k", "-2"], ["--blocks must be at least 1, got -2"]),
    "steps-zero": (["--steps", "0"], ["--steps must be positive, got 0"]),
    "steps-negative": (["--steps", "-5"], ["--steps must be positive, got -5"]),
    "batch-zero": (["--batch", "0"], ["--batch must be positive, got 0"]),
    "batch-negative": (["--batch", "-1"], ["--batch must be positive, got -1"]),
    "lr-zero": (["--lr", "0"], ["--lr must be positive, got 0"]),
    "lr-negative": (["--lr", "-0.1"], ["--lr must be positive, got -0.1"]),
    "lr-nan": (["--lr", "nan"], ["--lr must be positive, got nan"]),
    "logit-weight-negative": (["--logit-weight", "-1"], ["--logit-weight must be >= 0, got -1.0"]),
    "logit-temperature-zero": (["--logit-temperature", "0"], ["--logit-temperature must be positive, got 0.0"]),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_bad_option_values(S, cli, tmp_path, case):
    extra, needles = USAGE_CASES[case]
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o"), *extra)
    assert_error(res, 2, *needles)
    assert_nothing_written(tmp_path / "o")


def _small_savings(p):
    for b in p["blocks"]:
        b["saving"], b["saving_ms"] = 0.02, 0.02 * p["base"]["median_ms"]


@pytest.mark.parametrize("plan, needles", [
    (("--target-saving", "0.5"), ["a saving of 50.0% is unreachable", "saves at most 8.0%"]),
    (("--latency-budget-ms", "1e-6"), ["1e-06 ms is unreachable", "saves at most 8.0%"]),
])
def test_unreachable_target_says_the_most_reachable(S, cli, tmp_path, plan, needles):
    prof = profile_variant(S, tmp_path / "p.json", _small_savings)
    res = cli(*adapt_args(S, S["stream"], tmp_path / "o", profile=prof, plan=plan))
    assert_error(res, 2, *needles)
    assert_nothing_written(tmp_path / "o")


def test_output_path_is_a_file_or_not_empty(S, cli, tmp_path):
    (tmp_path / "file").write_text("keep me")
    assert_error(cli(*adapt_args(S, S["stream"], tmp_path / "file")), 6, "is a file, not a folder", "choose another --output")
    assert (tmp_path / "file").read_text() == "keep me" and leftovers(tmp_path / "file") == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert_error(cli(*adapt_args(S, S["stream"], tmp_path / "full")), 6, "is not empty", "--force")
    assert os.listdir(tmp_path / "full") == ["x"] and leftovers(tmp_path / "full") == []
    # --force on a folder edgeprune did not write (a mistyped --output): refused before any work, file kept
    assert_error(cli(*adapt_args(S, S["stream"], tmp_path / "full", "--force")), 6, "--force refused",
                 "not written by edgeprune", "choose another --output")
    assert os.listdir(tmp_path / "full") == ["x"] and leftovers(tmp_path / "full") == []


def test_profile_output_that_is_a_folder_is_refused_before_timing(cli, tmp_path):
    res = cli("profile", "-m", "resnet18", "--backend", "torch", "--resolution", RES, "-o", tmp_path)
    assert_error(res, 6, f"--output {tmp_path} is a folder", "give the path of the profile's .json file")
    assert "timing variants" not in res.err


def test_debug_shows_the_traceback(S, cli, tmp_path):
    res = cli("--debug", *adapt_args(S, S["stream"], tmp_path / "o"), "--steps", "0")
    assert res.rc == 2 and "Traceback" in res.err and "UsageError" in res.err, res
    assert error_line(res) == "error: --steps must be positive, got 0"


def test_click_usage_errors_have_no_traceback(cli):
    # typer >= 0.2x raises its vendored click's exceptions: these were "internal error" (70) before the fix
    res = cli("adapt", "--steps", "many")
    assert res.rc == 2 and "Traceback" not in res.err and "Invalid value for '--steps'" in res.err, res
    res = cli("adapt", "-i", "x", "--bogus")
    assert res.rc == 2 and "Traceback" not in res.err and "No such option: --bogus" in res.err, res
