"""Nothing runs from a data or checkpoint file, nothing the user owns is overwritten, and
every recovery the program advises is a command that works (issue 25).

The crafted files are written here: a refs pickle and a checkpoint whose unpickling would
create a marker file (through ``os.system``). Reading them must create no marker, name
the file and the refused global, and exit 2. Each error message that prints a command is
followed by running that command."""
from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from disk_faults import fail_fsync_of

import numpy as np
import pytest
import torch

from restr.commands.train import main as train_main
from restr.data.errors import DataError
from restr.data.refer import ReferData, ReferDataset, load_refs
from restr.engine.trainer import TrainingError, train
from restr.runs.folder import RunError, load_checkpoint, load_run

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "restr", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def printed_command(message: str) -> list[str]:
    """The arguments after ``python -m restr`` of the last `python -m restr ...` in backticks
    (the advice; an earlier one may say what was run before)."""
    found = re.findall(r"`python -m restr ([^`]+)`", message)
    assert found, f"no command in: {message}"
    return shlex.split(found[-1])


def data_args(root: Path) -> list[str]:
    return ["--preset", "smoke", "--data", str(root), "--dataset", "synthref", "--split-by", "unc", "--no-progress",
            "--workers", "0"]


class Marker:
    """Unpickles into a call of ``os.system`` that creates the file ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.path))}",)


@pytest.fixture
def data_copy(data_root, tmp_path) -> Path:
    """A copy of the module's 8-image data set that a test may break."""
    return Path(shutil.copytree(data_root, tmp_path / "data"))


# ----------------------------------------------------------------------------------------
# 1. safe loading: refs pickles

def test_a_refs_pickle_that_would_run_code_is_refused_by_name(data_copy, tmp_path):
    marker = tmp_path / "marker"
    refs_file = data_copy / "synthref" / "refs(unc).p"
    refs = load_refs(refs_file)
    refs[0]["sentences"][0]["raw"] = Marker(marker)
    refs_file.write_bytes(pickle.dumps(refs, protocol=4))
    for args in (["data", "stats", "--root", str(data_copy), "--dataset", "synthref", "--split-by", "unc"],
                 ["train", *data_args(data_copy), "--iterations", "2", "--out", str(tmp_path / "run")]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert not marker.exists()
        assert f"{refs_file}: refused to unpickle the Python global posix.system" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_plain_refs_pickles_still_load(tmp_path, protocol):
    """What refs files hold (lists of dicts of str/int/float/lists; a set, which protocols
    0 and 2 write through a global) loads; a Python 2 style str with non-ASCII bytes too."""
    refs = [{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "train", "file_name": "x_2.jpg", "area": 1.5,
             "sent_ids": [4], "tags": {"a", "b"}, "box": (1, 2),
             "sentences": [{"sent_id": 4, "sent": "the left one", "raw": "The left one", "tokens": ["the", "left"]}]}]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=protocol))
    assert load_refs(path) == refs
    # as Python 2 writes [{"raw": "caf\xe9"}] (a str of latin-1 bytes): proto 2, list, dict, two strings
    path.write_bytes(b"\x80\x02]}U\x03rawU\x04caf\xe9sa.")
    assert load_refs(path) == [{"raw": "caf\xe9"}]


def test_the_generated_data_sets_refs_load_restricted(data_root):
    refs = load_refs(data_root / "synthref" / "refs(unc).p")
    raw = pickle.loads((data_root / "synthref" / "refs(unc).p").read_bytes())
    assert refs == raw and len(refs) > 0


# ----------------------------------------------------------------------------------------
# 1. safe loading: checkpoints

@pytest.fixture
def run_copy(smoke_run, tmp_path) -> Path:
    return Path(shutil.copytree(smoke_run, tmp_path / "run"))


def test_a_checkpoint_written_today_loads_weights_only(smoke_run):
    state = load_checkpoint(smoke_run / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["format"] == 1
    name, keys, pos, has_gauss, cached = state["rng"][0]["numpy"]  # NumPy's state: one allow-listed array
    assert name == "MT19937" and isinstance(keys, np.ndarray) and keys.dtype == np.uint32 and keys.shape == (624,)
    assert load_run(smoke_run).step == 4


def test_a_checkpoint_written_under_numpy_1_loads(smoke_run, tmp_path):
    """NumPy 1.x pickles its arrays through numpy.core.multiarray (2.x: numpy._core): the
    same checkpoint with the old module name loads to the same state."""
    import zipfile

    src, old = smoke_run / "checkpoints" / "last.pt", tmp_path / "numpy1.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\n" in data
                data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            zout.writestr(info.filename, data)
    new_state, old_state = load_checkpoint(src), load_checkpoint(old)
    assert np.array_equal(new_state["rng"][0]["numpy"][1], old_state["rng"][0]["numpy"][1])
    assert all(torch.equal(new_state["model"][k], old_state["model"][k]) for k in new_state["model"])


@pytest.mark.parametrize("where", ["model", "top"])
def test_a_checkpoint_that_would_run_code_is_refused_by_name(run_copy, tmp_path, where):
    marker = tmp_path / "marker"
    path = run_copy / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)  # our own file: safe to read fully here
    if where == "model":
        state["model"]["evil"] = Marker(marker)
    else:
        state["rng"] = [Marker(marker)]
    torch.save(state, path)
    with pytest.raises(RunError, match=rf"{re.escape(str(path))}: refused to load: it names the Python global "
                                       r"posix\.system"):
        load_checkpoint(path)
    for args in (["evaluate", "--run", str(run_copy), "--split", "val", "--max-expressions", "4"],
                 ["train", "--out", str(run_copy), "--resume", "--no-progress", "--workers", "0"]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "refused to load: it names the Python global posix.system" in proc.stderr
        assert not marker.exists()


def test_every_checkpoint_load_in_the_package_is_weights_only():
    """No torch.load without weights_only=True, no pickle.load(s), no np.load with pickles,
    outside the restricted readers (restr/data/refer.py, restr/runs/folder.py)."""
    found = []
    for path in (ROOT / "restr").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "torch.load(" in code and "weights_only=True" not in code and "`" not in line:
                found.append(f"{path}:{n}: {line.strip()}")
            if re.search(r"pickle\.loads?\(|allow_pickle=True", code):
                found.append(f"{path}:{n}: {line.strip()}")
    # restr/model/release.py's docstring example loads the authors' own release file
    assert [f for f in found if "Gref_400000.pth" not in f] == []


# ----------------------------------------------------------------------------------------
# 4. vocabulary identity

def test_a_reordered_vocabulary_is_refused_naming_both_files(run_copy):
    vocab_file, config_file = run_copy / "vocab.json", run_copy / "config.json"
    words = json.loads(vocab_file.read_text())["words"]
    assert json.loads(config_file.read_text())["vocab_sha256"]
    words[2], words[3] = words[3], words[2]  # the same words, the same count, another order
    vocab_file.write_text(json.dumps({"words": words}))
    with pytest.raises(RunError, match=rf"{re.escape(str(vocab_file))} is not the vocabulary the run was trained "
                                       rf"with: .*{re.escape(str(config_file))} records"):
        load_run(run_copy)
    for args in (["evaluate", "--run", str(run_copy), "--split", "val", "--max-expressions", "4"],
                 ["train", "--out", str(run_copy), "--resume", "--no-progress", "--workers", "0"]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert str(vocab_file) in proc.stderr and str(config_file) in proc.stderr


# ----------------------------------------------------------------------------------------
# 5. image paths stay inside the image root; the site serves its own regular files

@pytest.mark.parametrize("name", ["../../outside.jpg", "/etc/hostname", "images/../../../x.jpg"])
def test_an_image_path_leaving_the_image_folder_is_a_named_problem(data_copy, name):
    instances = data_copy / "synthref" / "instances.json"
    d = json.loads(instances.read_text())
    image_id = d["images"][0]["id"]
    d["images"][0]["file_name"] = name
    instances.write_text(json.dumps(d))
    data = ReferData(data_copy, "synthref", "unc")
    with pytest.raises(DataError, match=rf"image id {image_id} in .*file_name {re.escape(repr(name))} leaves the "
                                       r"image folder"):
        data.load_image(image_id)
    proc = cli("data", "stats", "--root", str(data_copy), "--dataset", "synthref", "--split-by", "unc",
               "--no-image-decode")
    assert proc.returncode == 1 and "leaves the image folder" in proc.stdout + proc.stderr


def test_the_site_server_serves_regular_files_inside_the_site_only(tmp_path):
    from restr.book.site import SiteRequestHandler

    site, outside = tmp_path / "html", tmp_path / "secret"
    (site / "sub").mkdir(parents=True)
    outside.mkdir()
    (site / "index.html").write_text("<p>book</p>")
    (site / "sub" / "page.html").write_text("page")
    (outside / "key.txt").write_text("secret")
    os.symlink(outside / "key.txt", site / "key.txt")
    os.symlink(outside, site / "out")
    os.symlink(site / "sub", site / "inside-link")
    os.mkfifo(site / "fifo")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(SiteRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}{url}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        assert get("/") == (200, "<p>book</p>") and get("/sub/page.html") == (200, "page")
        for url in ("/key.txt", "/out/key.txt", "/inside-link/page.html", "/fifo", "/../secret/key.txt",
                    "/%2e%2e/secret/key.txt"):
            assert get(url)[0] == 404, url
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------
# 2. nothing the user owns is overwritten: train --out

def test_train_refuses_a_folder_that_is_not_a_run_and_force_keeps_the_others(data_root, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}\n')
    (out / "notes.txt").write_text("my notes\n")
    common = [*data_args(data_root), "--iterations", "2", "--set", "train.val_every=0", "--out", str(out)]
    proc = cli("train", *common)
    assert proc.returncode == 1
    assert f"{out} is not a run folder: it holds config.json, notes.txt" in proc.stderr and "--force" in proc.stderr
    assert (out / "config.json").read_text() == '{"my": "settings"}\n'
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]  # not even a lock file left
    assert train_main([*common, "--force"]) == 0
    assert (out / "notes.txt").read_text() == "my notes\n" and load_run(out).step == 2


def test_a_run_that_never_saved_a_checkpoint_is_still_restarted(data_root, tmp_path, monkeypatch):
    """A run killed before its first checkpoint (config.json, vocab.json, metrics.jsonl) is
    the program's own: a new run starts there without --force."""
    run = tmp_path / "run"
    train(_smoke(data_root, iterations=2), run, progress=False)
    shutil.rmtree(run / "checkpoints")
    assert train_main([*data_args(data_root), "--iterations", "2", "--set", "train.val_every=0",
                       "--out", str(run)]) == 0


def _smoke(root: Path, **train_values):
    from restr.config import get_preset

    t = {"iterations": 8, "ckpt_every": 4, "val_every": 4, "log_every": 2, "batch_size": 4, **train_values}
    return get_preset("smoke", train=t, data={"root": str(root), "num_workers": 0})


# ----------------------------------------------------------------------------------------
# 3. advice that works: a full disk

@pytest.mark.parametrize("extending", [False, True])
def test_the_command_advised_after_a_full_disk_goes_on(data_root, tmp_path, monkeypatch, extending):
    run = tmp_path / "run"
    if extending:  # a finished 8-step run, extended to 16; the disk fills at step 12
        train(_smoke(data_root), run, progress=False)
        fail_fsync_of(monkeypatch, "last.pt")
        with pytest.raises(TrainingError) as err:
            train_main_or_raise(["--out", str(run), "--resume", "--extend", "--iterations", "16", "--no-progress"])
    else:  # the disk fills at step 8 of a new 12-step run
        fail_fsync_of(monkeypatch, "last.pt", after=1)
        with pytest.raises(TrainingError) as err:
            train(_smoke(data_root, iterations=12), run, progress=False)
    message = str(err.value)
    assert "disk full" in message and ("--extend" in message) == extending
    monkeypatch.undo()
    args = printed_command(message)
    assert args[0] == "train"
    assert train_main(args[1:]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["finished"] and state["step"] == (16 if extending else 12)


def train_main_or_raise(argv: list[str]) -> None:
    """``train`` as the command line runs it (its config from the options), raising its error."""
    from restr.commands.train import build_parser, config_from_train_args

    args = build_parser().parse_args(argv)
    args.resume = args.resume_from or args.resume
    train(config_from_train_args(args), args.run, resume=args.resume, progress=False,
          allow=[a for a in ("extend", "force") if getattr(args, a)])


def test_data_synth_on_a_full_disk_names_it_from_its_workers_and_exits_2(tmp_path):
    """The image workers' writes find the disk full: the error reaches the parent whole (no
    TypeError, no hang), names the file, and the command exits 2."""
    script = tmp_path / "full_disk.py"
    script.write_text(
        "import errno, os, sys\n"
        "PARENT, real = os.getpid(), os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        "    if str(dst).endswith('.jpg') and os.getpid() != PARENT:  # in the image workers only\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(src, dst, *a, **k)\n"
        "os.replace = replace\n"
        "from restr.cli import main\n"
        "sys.exit(main(['data', 'synth', '--out', sys.argv[1], '--num-images', '64', '--workers', '2', '--quiet']))\n")
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, str(script), str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert re.search(rf"error: disk full: could not write {re.escape(str(out))}/synthref/images/\S+\.jpg", proc.stderr)
    assert "TypeError" not in proc.stderr and "Traceback" not in proc.stderr
    again = cli("data", "synth", "--out", str(out), "--num-images", "64", "--workers", "2", "--quiet")
    assert again.returncode == 0, again.stderr  # "run the same command again", with room


# ----------------------------------------------------------------------------------------
# 3. the pretrained ViT cache: a kill leaves nothing or a whole entry; half an entry is redone

def test_a_half_pretrain_cache_entry_is_reported_and_redone(data_root, tmp_path, monkeypatch, capsys):
    import restr.engine.pretrain as pretrain
    from restr.config import get_preset

    calls = []

    def quick_pretraining(model_cfg, data, train_ids, p):  # the cache is what is tested, not the training
        calls.append(len(train_ids))
        return {"w": torch.full((2,), float(len(calls)))}, {"steps": 1, "seconds": 0.1, "pixel_accuracy": 0.5,
                                                            "object_pixel_accuracy": 0.25}

    monkeypatch.setattr(pretrain, "pretrain_vit", quick_pretraining)
    model, p = get_preset("smoke").model, pretrain.PretrainConfig(epochs=1, batch_size=1, val_images=1)

    def ensure():
        return pretrain.ensure_pretrained(model, str(data_root), "synthref", "unc", p, tmp_path / "pre")

    real_write = pretrain.atomic_write_bytes

    def killed(path, data, **kw):  # the process dies while writing the weights
        if str(path).endswith(".safetensors"):
            raise KeyboardInterrupt
        return real_write(path, data, **kw)

    monkeypatch.setattr(pretrain, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure()
    monkeypatch.setattr(pretrain, "atomic_write_bytes", real_write)
    key = pretrain.instances_key(ReferData(data_root, "synthref", "unc").instances_path)
    path = pretrain.pretrained_path(model, p, key,
                                    tmp_path / "pre")
    assert path.with_suffix(".json").is_file() and not path.exists()  # the record only: no entry
    capsys.readouterr()
    assert ensure() == path and len(calls) == 2
    assert "without" in capsys.readouterr().err
    assert ensure() == path and len(calls) == 2  # a whole entry: read from the cache
    path.with_suffix(".json").unlink()  # the old order's half entry: weights without their record
    assert ensure() == path and len(calls) == 3
    assert f"holds {path} without {path.with_suffix('.json')}" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# 3. every printed command runs: data stats advice

def test_the_data_stats_command_of_a_data_error_lists_every_problem(data_copy):
    refs_file = data_copy / "synthref" / "refs(unc).p"
    refs = load_refs(refs_file)
    for r in refs:
        for s in r["sentences"]:
            s["sent"] = s["raw"] = " . "
    refs_file.write_bytes(pickle.dumps(refs))
    with pytest.raises(DataError) as err:
        ReferDataset(data_copy, "synthref", "unc", "train")
    assert "more (run `python -m restr data stats" in str(err.value)
    proc = cli(*printed_command(str(err.value)))
    assert proc.returncode == 1  # problems found, every one listed
    assert "empty expression" in proc.stdout + proc.stderr


def test_the_data_stats_command_printed_after_synth_runs(tmp_path):
    proc = cli("data", "synth", "--out", str(tmp_path / "d"), "--num-images", "8", "--workers", "0", "--quiet")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "python -m restr data stats" in x)
    assert cli(*shlex.split(line.split("python -m restr ", 1)[1])).returncode == 0


# ----------------------------------------------------------------------------------------
# 2./3. the zoo: a profile's models never replace another's; the retrain advice runs

@pytest.mark.slow
def test_zoo_models_of_two_profiles_never_replace_each_other_and_the_advice_runs(tmp_path):
    from restr.zoo.manifest import ZooError, checked_file, read_manifest, retrain_command

    zoo, env = tmp_path / "zoo", {"RESTR_ZOO": str(tmp_path / "zoo")}
    shipped = json.loads((ROOT / "data" / "zoo" / "manifest.json").read_text())["models"]
    quick_main = next(m for m in shipped if m["name"] == "main-s0")
    assert retrain_command(quick_main) == "python -m restr zoo train --profile quick --only main --seeds 0 --retrain"
    zoo.mkdir()
    (zoo / "manifest.json").write_text(json.dumps({"models": [quick_main]}))  # the quick model, its file absent
    train_smoke = ["zoo", "train", "--profile", "smoke", "--only", "main", "--seeds", "0", "--runs", "runs"]
    proc = cli(*train_smoke, cwd=tmp_path, env=env)  # cwd: the smoke profile's data goes under tmp_path
    assert proc.returncode == 0, proc.stderr
    names = sorted(m["name"] for m in read_manifest(zoo))
    assert names == ["main-s0", "smoke-main-s0"]  # the quick entry is still there, untouched
    assert next(m for m in read_manifest(zoo) if m["name"] == "main-s0") == quick_main

    # an entry of another config under the smoke model's name: refused, then replaced on request
    models = read_manifest(zoo)
    smoke = next(m for m in models if m["name"] == "smoke-main-s0")
    smoke["config"]["train"]["lr"] *= 2
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    before = (zoo / "manifest.json").read_bytes()
    proc = cli(*train_smoke, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "already holds a model called 'smoke-main-s0'" in proc.stderr
    assert (zoo / "manifest.json").read_bytes() == before
    proc = cli(*printed_command(proc.stderr), "--runs", "runs", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    smoke = next(m for m in read_manifest(zoo) if m["name"] == "smoke-main-s0")
    assert checked_file(smoke, zoo).is_file()

    # a corrupt file: the printed command puts it back
    weights = zoo / smoke["file"]
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    with pytest.raises(ZooError, match="corrupt or was replaced") as err:
        checked_file(smoke, zoo)
    args = printed_command(str(err.value))
    assert args == ["zoo", "train", "--profile", "smoke", "--only", "main", "--seeds", "0", "--retrain"]
    proc = cli(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert checked_file(next(m for m in read_manifest(zoo) if m["name"] == "smoke-main-s0"), zoo).is_file()


@pytest.mark.slow
def test_book_serve_without_a_site_prints_the_command_that_builds_it(tmp_path, smoke_book):
    """`book --serve [--profile P] --build B` with nothing built names `python -m restr book
    [--profile P] --build B`; that command builds the site --serve then serves (the smoke
    profile here: the default (converged) one's advice differs only by leaving out its
    --profile, checked below). The command's run is the smoke_book fixture's, the same command with
    its own --build and its data and runs kept apart (the suite runs the smoke book once)."""
    build = tmp_path / "build"
    default = cli("book", "--serve", "--build", str(build))
    assert default.returncode == 1 and printed_command(default.stderr) == ["book", "--build", str(build)]
    converged = cli("book", "--serve", "--profile", "converged", "--build", str(build))
    assert printed_command(converged.stderr) == ["book", "--build", str(build)]
    quick = cli("book", "--serve", "--profile", "quick", "--build", str(build))
    assert printed_command(quick.stderr) == ["book", "--profile", "quick", "--build", str(build)]
    proc = cli("book", "--serve", "--profile", "smoke", "--build", str(build))
    assert proc.returncode == 1 and f"no site at {build / 'html'}" in proc.stderr
    args = printed_command(proc.stderr)
    assert args == ["book", "--profile", "smoke", "--build", str(build)]
    ran = (smoke_book / "book.args").read_text().split("\n")[:-1]
    fixture_build = smoke_book / "build"
    assert ran[:5] == args[:4] + [str(fixture_build)]
    assert ran[5:] == ["--runs", str(smoke_book / "runs"), "--data", str(smoke_book / "data"), "--progress-every", "5"]
    assert (fixture_build / "html" / "index.html").is_file()  # what --serve serves
