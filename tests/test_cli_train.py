"""``netcanvas train`` and ``netcanvas sample`` end to end: exit codes, one-line errors, resume.

The tests that run ``python -m graphcore.cli`` in a process of its own (which imports torch
first) are slow tests; the others call ``main`` in this process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from train_graphs import one_thread, tiny_denoiser  # noqa: F401

import graphcore as gc
from graphcore.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def netcanvas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "graphcore.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)



def assert_usage_error(argv: list[str], complaint: str, folder: Path, capsys: pytest.CaptureFixture) -> None:
    """``netcanvas ARGV`` run in ``folder`` exits 2 with ``complaint`` as its last line, no traceback,
    and writes nothing."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err.strip().splitlines()[-1] and "Traceback" not in err
    assert list(folder.iterdir()) == []

@pytest.mark.slow
def test_train_lenet_on_digits(tmp_path, capsys):
    code = main(["train", "lenet5", "--task", "classify", "--dataset", "digits", "--epochs", "2",
                 "--batch-size", "32", "--lr", "0.01", "--seed", "3", "--checkpoint-minutes", "0.5",
                 "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "finished 2 epochs" in out and "accuracy" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["seed"] == 3 and config["lr"] == 0.01 and config["batch_size"] == 32
    assert config["checkpoint_minutes"] == 0.5


def test_resume_continues_the_run(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "lenet5", "--epochs", "1", "--out", run]) == 0
    assert main(["train", "--resume", run, "--epochs", "2"]) == 0
    assert "finished 2 epochs" in capsys.readouterr().out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 1, 2, 2]
    assert main(["train", "--resume", run, "--lr", "0.5"]) == 1
    assert "--lr cannot change when resuming" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["lenet5", "--dataset", "nowhere"], "dataset 'nowhere' not found"),
    (["lenet5", "--task", "reconstruct"], "reconstruction needs the output shape"),
    (["lenet5", "--task", "diffusion"], "timestep"),
    (["no_such_graph"], "no template named"),
    (["--resume", "not/a/run"], "not a run folder"),
])
@pytest.mark.slow
def test_user_errors_are_one_line_and_exit_1(tmp_path, args, message):
    done = netcanvas("train", *args, "--out", str(tmp_path / "run"))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_arguments_exit_2(tmp_path):
    for argv in (["train", "lenet5", "--epochs", "many"], ["train", "lenet5", "--task", "dance"],
                 ["sample", str(tmp_path), "--sampler", "euler"]):
        with pytest.raises(SystemExit) as exit_info:  # argparse's exit: the command's exit status
            main(argv)
        assert exit_info.value.code == 2


def test_sample_writes_grid_and_array(tmp_path, capsys):
    gc.save(tiny_denoiser(), tmp_path / "g.json")
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["train", str(tmp_path / "g.json"), "--task", "diffusion", "--epochs", "1", "--out", str(run)]) == 0
    for sampler in ("ddim", "ddpm"):
        assert main(["sample", str(run), "--sampler", sampler, "--steps", "8", "--n", "5", "--seed", "1",
                     "--out", str(out / sampler)]) == 0
        samples = np.load(out / sampler / "samples.npy")
        assert samples.shape == (5, 1, 8, 8) and samples.dtype == np.float32
        assert 0.0 <= samples.min() and samples.max() <= 1.0 and (out / sampler / "grid.png").exists()
    with pytest.raises(SystemExit) as exit_info:  # a tiny_denoiser run has 1000 timesteps
        main(["sample", str(run), "--steps", "1001", "--out", str(out / "many")])
    assert exit_info.value.code == 2 and not (out / "many").exists()
    assert "argument --steps: at most the run's 1000 timesteps, got 1001" in capsys.readouterr().err
    again = tmp_path / "again"
    assert main(["sample", str(run), "--steps", "8", "--n", "5", "--seed", "1", "--out", str(again)]) == 0
    assert np.array_equal(np.load(again / "samples.npy"), np.load(out / "ddim" / "samples.npy"))


def test_sample_a_long_video(tmp_path):
    gc.save(tiny_denoiser(size=8, video_frames=4), tmp_path / "v.json")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "v.json"), "--task", "diffusion", "--epochs", "1", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--steps", "4", "--n", "2", "--frames", "10", "--overlap", "2"]) == 0
    (out,) = (run / "samples").iterdir()  # the default: a new folder inside the run
    assert np.load(out / "samples.npy").shape == (2, 1, 10, 8, 8)
    assert {p.name for p in out.iterdir()} == {"grid.png", "samples.npy", "clip.gif"}


def test_sample_refuses_a_classifier_run(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "lenet5", "--epochs", "1", "--out", run]) == 0
    assert main(["sample", run, "--out", str(tmp_path / "s")]) == 1
    assert "needs a diffusion run" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "graphcore.cli", "train", "lenet5", "--epochs", "200",
                                "--out", str(run)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "last.pt").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "stop requested (SIGINT)" in out
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] > 0 and str(state["step"]) in out


@pytest.mark.parametrize("argv, complaint", [
    (["train", "lenet5", "--lr", "-1"], "argument --lr: must be a positive number, got '-1'"),
    (["train", "lenet5", "--lr", "nan"], "argument --lr: must be a positive number, got 'nan'"),
    (["train", "lenet5", "--lr", "inf"], "argument --lr: must be a positive number"),
    (["train", "lenet5", "--epochs", "0"], "argument --epochs: must be a whole number of at least 1, got '0'"),
    (["train", "lenet5", "--batch-size", "0"], "argument --batch-size: must be a whole number of at least 1"),
    (["train", "lenet5", "--minutes", "-1"], "argument --minutes: must be a positive number"),
    (["train", "lenet5", "--nproc", "0"], "argument --nproc: must be a whole number of at least 1"),
    (["train", "lenet5", "--seed", "-1"], "argument --seed: must be a whole number from 0 to 4294967295"),
    (["train", "lenet5", "--seed", "99999999999999999999"], "argument --seed: must be a whole number from 0"),
    (["train", "lenet5", "--out", ""], "argument --out: must name a file or folder"),
    (["sample", "run", "--n", "0"], "argument --n: must be a whole number of at least 1"),
    (["sample", "run", "--steps", "0"], "argument --steps: must be a whole number of at least 1"),
    (["sample", "run", "--frames", "-3"], "argument --frames: must be a whole number of at least 1"),
])
def test_numbers_out_of_range_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, complaint):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(argv, complaint, tmp_path, capsys)


@pytest.mark.slow
def test_out_refuses_a_users_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.jsonl").write_text("my numbers\n")
    done = netcanvas("train", "lenet5", "--epochs", "1", "--out", str(tmp_path / "mine"))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(tmp_path / "mine") in done.stderr and "not a NetCanvas run folder" in done.stderr
    assert (tmp_path / "mine" / "metrics.jsonl").read_text() == "my numbers\n"


class _Payload:
    """Unpickled, it would create a folder: how a malicious checkpoint runs code."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


@pytest.mark.slow
def test_a_malicious_checkpoint_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--epochs", "1", "--out", str(run)]) == 0
    torch.save({"model": _Payload(tmp_path / "pwned")}, run / "last.pt")
    done = netcanvas("train", "--resume", str(run), "--epochs", "2")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "last.pt: refused" in done.stderr and "weights_only" not in done.stderr
    assert not (tmp_path / "pwned").exists()


def test_minutes_without_epochs_trains_for_the_budget(tmp_path, capsys):
    gc.save(tiny_denoiser(), tmp_path / "g.json")
    run = tmp_path / "run"
    began = time.monotonic()
    assert main(["train", str(tmp_path / "g.json"), "--task", "diffusion", "--minutes", "0.05", "--out", str(run)]) == 0
    # the budget, not a fixed number of epochs; the run keeps what its last epoch's end took (evaluation,
    # checkpoint, preview) free at the end, which on a loaded machine is a good part of a short budget
    assert time.monotonic() - began > 0.05 * 60 * 0.5
    assert "finished: time budget of 0.05 min used" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] is None and config["minutes"] == 0.05
    assert torch.load(run / "last.pt", weights_only=True)["step"] >= 1


def test_init_fine_tunes_from_weights_and_refuses_ones_that_do_not_fit(tmp_path, capsys):
    source = tmp_path / "source"
    assert main(["train", "lenet5", "--epochs", "1", "--out", str(source)]) == 0
    assert main(["train", "lenet5", "--epochs", "1", "--init", str(source / "best.pt"), "--out",
                 str(tmp_path / "tuned")]) == 0
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init"] == str(source / "best.pt")
    gc.save(tiny_denoiser(), tmp_path / "g.json")
    capsys.readouterr()
    assert main(["train", str(tmp_path / "g.json"), "--epochs", "1", "--init", str(source / "best.pt"),
                 "--out", str(tmp_path / "wrong")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best.pt: the weights do not fit graph 'tiny_denoiser'" in err
    assert "missing: temb.weight" in err and "unexpected: f5.weight" in err


def test_samples_go_to_a_new_stamped_folder_inside_the_run(tmp_path, capsys):
    gc.save(tiny_denoiser(), tmp_path / "g.json")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "g.json"), "--task", "diffusion", "--epochs", "1", "--out", str(run)]) == 0
    for _ in range(2):
        assert main(["sample", str(run), "--steps", "4", "--n", "3"]) == 0
    folders = sorted((run / "samples").iterdir())
    assert len(folders) == 2 and all(re.fullmatch(r"\d{8}-\d{6}(-\d+)?", f.name) for f in folders)
    for folder in folders:
        assert {p.name for p in folder.iterdir()} == {"grid.png", "samples.npy"}
        assert np.load(folder / "samples.npy").shape == (3, 1, 8, 8)
    assert str(folders[1]) in capsys.readouterr().out
