"""The trainer: real training on digits, the run folder, exact resume, NaN, stop requests, DDP."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import stat
import subprocess
import sys
import threading

import pytest
import torch
from train_graphs import one_thread, tiny_autoencoder, tiny_classifier, tiny_denoiser  # noqa: F401

import graphcore as gc
from graphcore.runtime.config import TrainConfig, guess_task
from graphcore.runtime.train import Trainer, lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lenet_learns_digits_and_writes_a_run_folder(tmp_path):
    result = Trainer(gc.template("lenet5"), TrainConfig(epochs=3, lr=1e-2, batch_size=32), out=tmp_path / "run").fit()
    assert result.status == "finished", result.message
    assert result.metrics["val"]["accuracy"] > 0.85  # chance is 0.10
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"graph.json", "config.json", "last.pt", "best.pt", "metrics.jsonl"}
    lines = _metrics(run)
    assert [(m["epoch"], m["split"]) for m in lines] == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
    assert all({"epoch", "step", "split", "loss", "accuracy"} <= set(m) for m in lines)
    assert lines[-1]["loss"] < lines[1]["loss"]
    # best.pt loads into a freshly compiled graph and gives the logged accuracy on the val split
    model = gc.compile(gc.load(run / "graph.json")).init(run / "best.pt").eval()
    from graphcore.runtime.data import load_dataset
    x, y = load_dataset("digits", (1, 28, 28)).split("val")
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    best = min((m for m in lines if m["split"] == "val"), key=lambda m: m["loss"])  # best = lowest val loss
    assert accuracy == pytest.approx(best["accuracy"], abs=1e-6)


def test_reconstruct_task_lowers_the_error(tmp_path):
    result = Trainer(tiny_autoencoder(), TrainConfig(task="reconstruct", epochs=3, lr=3e-3), out=tmp_path / "ae").fit()
    lines = _metrics(tmp_path / "ae")
    assert result.status == "finished" and lines[-1]["loss"] < lines[1]["loss"]
    assert "accuracy" not in lines[-1]


def test_task_is_guessed_from_the_graph():
    assert guess_task(gc.template("lenet5")) == "classify"
    assert guess_task(tiny_autoencoder()) == "reconstruct"
    assert guess_task(tiny_denoiser()) == "diffusion"


def test_lr_schedule_warms_up_then_decays():
    total = 100
    factors = [lr_factor(s, total, 0.1, "cosine") for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] < 0.01
    assert lr_factor(50, total, 0.1, "constant") == 1.0


def _stop_at(step: int, event: threading.Event):
    def hook(trainer: Trainer) -> None:
        if trainer.step == step:
            event.set()
    return hook


def _assert_same_weights(a, b):
    state_a, state_b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key in ("model", "ema"):
        if key in state_a:
            assert state_a[key].keys() == state_b[key].keys()
            for name in state_a[key]:
                assert torch.equal(state_a[key][name], state_b[key][name]), f"{key}.{name} differs"


def test_resume_after_a_stop_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    config = TrainConfig(epochs=3, batch_size=128, lr=1e-2)
    straight = Trainer(tiny_classifier(), config, out=tmp_path / "straight").fit()
    stop = threading.Event()
    first = Trainer(tiny_classifier(), TrainConfig(**config.to_dict()), out=tmp_path / "split", stop_event=stop,
                    on_step=_stop_at(16, stop)).fit()  # 12 steps an epoch: stops inside epoch 2
    assert first.status == "stopped" and first.step == 16 and "stop requested" in first.message
    second = Trainer.resume(tmp_path / "split").fit()
    assert second.status == "finished" and second.step == straight.step
    _assert_same_weights(tmp_path / "straight" / "last.pt", tmp_path / "split" / "last.pt")
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "split")


def test_n_epochs_then_m_more_equals_n_plus_m_for_diffusion(tmp_path):
    # A constant lr (no warm-up) makes the plan independent of the total, so "2, then resume to 3"
    # must give exactly the run of 3: weights, EMA, optimizer moments and the noise RNG all carry over.
    options = dict(task="diffusion", batch_size=256, lr=2e-3, schedule="constant", warmup=0.0)
    Trainer(tiny_denoiser(), TrainConfig(epochs=3, **options), out=tmp_path / "straight").fit()
    Trainer(tiny_denoiser(), TrainConfig(epochs=2, **options), out=tmp_path / "split").fit()
    result = Trainer.resume(tmp_path / "split", epochs=3).fit()
    assert result.status == "finished" and result.epoch == 3
    _assert_same_weights(tmp_path / "straight" / "last.pt", tmp_path / "split" / "last.pt")
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "split")


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(trainer: Trainer) -> None:
        if trainer.step == 15:  # epoch 2 (12 steps an epoch): the next forward pass gives NaN
            with torch.no_grad():
                trainer.model.fc.weight.fill_(float("nan"))

    result = Trainer(tiny_classifier(), TrainConfig(epochs=3, batch_size=128), out=tmp_path / "run",
                     on_step=poison).fit()
    assert result.status == "nan"
    assert "at step 16 (epoch 2)" in result.message and "last.pt (step 12)" in result.message
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 12 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_time_budget_stops_with_a_checkpoint_that_resumes(tmp_path):
    result = Trainer(tiny_classifier(), TrainConfig(epochs=50, minutes=0.0005), out=tmp_path / "run").fit()
    assert result.status == "time_limit" and "time budget" in result.message
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == result.step < 50 * 23
    resumed = Trainer.resume(tmp_path / "run", epochs=1 + result.epoch).fit()
    assert resumed.status == "finished" and resumed.step > result.step


def test_sigterm_saves_before_stopping(tmp_path):
    code = (
        "import os, signal, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from train_graphs import tiny_classifier\n"
        "from graphcore.runtime.config import TrainConfig\n"
        "from graphcore.runtime.train import Trainer\n"
        "hook = lambda t: os.kill(os.getpid(), signal.SIGTERM) if t.step == 5 else None\n"
        f"r = Trainer(tiny_classifier(), TrainConfig(epochs=5), out={str(tmp_path / 'run')!r}, on_step=hook).fit()\n"
        "print(r.status, r.step)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "5"]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 5


def test_a_graph_that_fails_at_run_time_is_refused_before_training(tmp_path):
    doc = tiny_denoiser()
    doc.node("temb").params["num_embeddings"] = 10  # timesteps go up to 999
    with pytest.raises(gc.GraphError, match="fails on a batch"):
        Trainer(doc, TrainConfig(task="diffusion", epochs=1), out=tmp_path / "run").fit()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_existing_run_is_not_overwritten(tmp_path):
    Trainer(tiny_classifier(), TrainConfig(epochs=1), out=tmp_path / "run").fit()
    with pytest.raises(gc.GraphError, match="already holds a run: resume it with --resume"):
        Trainer(tiny_classifier(), TrainConfig(epochs=1), out=tmp_path / "run").fit()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "graphcore.cli", "train", "lenet5", "--task", "classify", "--epochs", "4",
         "--lr", "0.01", "--batch-size", "64", "--nproc", "2", "--device", "cpu", "--out", str(run)],
        capture_output=True, text=True, timeout=600, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finished 4 epochs") == 1  # only rank 0 speaks
    lines = _metrics(run)
    assert [(m["epoch"], m["split"]) for m in lines] == [(e, s) for e in (1, 2, 3, 4) for s in ("train", "val")]
    steps_per_epoch = math.ceil(math.ceil(1437 / 2) / 32)  # each rank takes half of every batch of 64
    assert lines[-1]["step"] == 4 * steps_per_epoch
    assert lines[-1]["accuracy"] > 0.85


def test_out_must_be_empty_absent_or_a_netcanvas_run_folder(tmp_path):
    mine = tmp_path / "mine"  # a user's folder that happens to hold files a run would write
    mine.mkdir()
    (mine / "graph.json").write_text("my own graph")
    (mine / "best.pt").write_bytes(b"my weights")
    (tmp_path / "a_file").write_text("mine too")
    for out in (mine, tmp_path / "a_file"):
        with pytest.raises(gc.GraphError) as info:
            Trainer(tiny_classifier(), TrainConfig(epochs=1), out=out).fit()
        assert len(info.value.diagnostics) == 1 and str(out) in str(info.value) and "--out" in str(info.value)
    assert (mine / "graph.json").read_text() == "my own graph" and (mine / "best.pt").read_bytes() == b"my weights"
    assert sorted(p.name for p in mine.iterdir()) == ["best.pt", "graph.json"]
    assert (tmp_path / "a_file").read_text() == "mine too"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert Trainer(tiny_classifier(), TrainConfig(epochs=1), out=empty).fit().status == "finished"
    assert (empty / ".netcanvas-run").read_text().startswith("netcanvas.run")
    (empty / "last.pt").unlink()  # a run that ended before its first checkpoint may start again
    (empty / "best.pt").unlink()
    assert Trainer(tiny_classifier(), TrainConfig(epochs=1), out=empty).fit().status == "finished"


def test_run_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(tiny_classifier(), TrainConfig(epochs=1), out=tmp_path / "run").fit()
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert modes == dict.fromkeys([".netcanvas-run", "graph.json", "config.json", "metrics.jsonl", "last.pt",
                                   "best.pt"], 0o644)


def test_kill_9_mid_epoch_loses_at_most_the_checkpoint_interval_and_resumes_exactly(tmp_path):
    config = TrainConfig(epochs=3, batch_size=128, lr=1e-2, checkpoint_minutes=0.0001)  # 12 steps an epoch
    straight = Trainer(tiny_classifier(), config, out=tmp_path / "straight").fit()
    code = (
        "import os, signal, sys, torch\n"
        "sys.path.insert(0, 'tests')\n"
        "torch.set_num_threads(1)\n"
        "from train_graphs import tiny_classifier\n"
        "from graphcore.runtime.config import TrainConfig\n"
        "from graphcore.runtime.train import Trainer\n"
        "saved = []\n"
        "def events(event):\n"
        "    if event['type'] == 'checkpoint':\n"
        "        saved.append(event['step'])\n"
        "def hook(trainer):  # two steps after a checkpoint inside epoch 2 or 3: the power goes\n"
        "    if saved and saved[-1] > 12 and saved[-1] % 12 and trainer.step == saved[-1] + 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"Trainer(tiny_classifier(), TrainConfig(**{config.to_dict()!r}), out={str(tmp_path / 'split')!r},\n"
        "        events=events, on_step=hook).fit()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    state = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert state["step"] > 12 and state["batch"] not in (0, 12)  # saved inside an epoch, not at its end
    torn = tmp_path / "split" / ".last.pt.0123abcd.tmp"  # what a kill during a save leaves
    torn.write_bytes(b"half a checkpoint")
    resumed = Trainer.resume(tmp_path / "split").fit()
    assert not torn.exists()
    assert resumed.status == "finished" and resumed.step == straight.step
    _assert_same_weights(tmp_path / "straight" / "last.pt", tmp_path / "split" / "last.pt")
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "split")


def test_a_torn_metrics_line_is_skipped_with_a_warning_on_resume(tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(tiny_classifier(), TrainConfig(epochs=1), out=run).fit()
    good = (run / "metrics.jsonl").read_text()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 4')  # the power went while this line was written
    with caplog.at_level(logging.WARNING):
        result = Trainer.resume(run, epochs=2).fit()
    assert result.status == "finished" and result.epoch == 2
    assert "metrics.jsonl" in caplog.text and "line 3" in caplog.text
    lines = (run / "metrics.jsonl").read_text()
    assert lines.startswith(good) and [m["epoch"] for m in _metrics(run)] == [1, 1, 2, 2]


class _Payload:
    """A pickle that would create a folder when unpickled, as a malicious checkpoint runs code."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


@pytest.mark.parametrize("damage, expected", [
    (lambda run: torch.save({}, run / "last.pt"), "last.pt: not a training checkpoint: missing model"),
    (lambda run: torch.save({"model": {}, "step": 3}, run / "last.pt"),
     "missing optimizer, scaler, epoch, batch"),
    (lambda run: torch.save({"model": _Payload(run / "pwned")}, run / "last.pt"),
     "last.pt: refused"),
    (lambda run: torch.save([1, 2], run / "last.pt"), "last.pt: not a training checkpoint"),
    (lambda run: (run / "last.pt").write_bytes(b"\x00garbage"), "last.pt: cannot read the checkpoint"),
    (lambda run: _patch_checkpoint(run, optimizer={"state": 5}), "last.pt: damaged checkpoint"),
    (lambda run: (run / "config.json").write_text('{"epochs": '), "config.json:1:12: invalid JSON"),
    (lambda run: (run / "config.json").write_text("[1]"), "config.json: a run config must be a JSON object"),
    (lambda run: (run / "config.json").write_text('{"epochs": "many"}'), "config.json: epochs: "),
    (lambda run: (run / "config.json").write_text('{"lr": -1}'), "config.json: lr must be a positive number"),
    (lambda run: (run / "config.json").write_bytes(b"\xff\xfe"), "config.json: cannot read"),
])
def test_a_damaged_run_is_one_line_naming_the_file(tmp_path, damage, expected):
    run = tmp_path / "run"
    Trainer(tiny_classifier(), TrainConfig(epochs=1), out=run).fit()
    damage(run)
    with pytest.raises(gc.GraphError) as info:
        Trainer.resume(run, epochs=2).fit()
    message = str(info.value)
    assert len(info.value.diagnostics) == 1 and "\n" not in message
    assert expected in message, message
    assert "weights_only" not in message and "Re-running" not in message
    assert not (run / "pwned").exists()


def _patch_checkpoint(run, **changes) -> None:
    state = torch.load(run / "last.pt", weights_only=True)
    torch.save(state | changes, run / "last.pt")


def test_a_damaged_best_checkpoint_is_one_line_when_loading_the_run(tmp_path):
    from graphcore.runtime.train import load_run

    run = tmp_path / "run"
    Trainer(tiny_classifier(), TrainConfig(epochs=1), out=run).fit()
    torch.save({"model": {"fc.weight": "not a tensor"}}, run / "best.pt")
    with pytest.raises(gc.GraphError, match="best.pt: not a training checkpoint: model must map names to tensors"):
        load_run(run, checkpoint="best")


def test_a_lone_surrogate_in_a_label_trains_and_its_run_keeps_the_graph(tmp_path):
    doc = tiny_classifier()
    doc.node("fc").label = "logits \ud800"  # what a file holding "\ud800" loads as
    assert Trainer(doc, TrainConfig(epochs=1), out=tmp_path / "run").fit().status == "finished"
    assert gc.load(tmp_path / "run" / "graph.json") == doc
