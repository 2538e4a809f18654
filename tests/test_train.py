"""The trainer: real training on digits, the run folder, exact resume, NaN, stop requests, DDP.

Tests that start a Python process of their own, train a full template for epochs or run for a
set time are slow tests."""

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
import time

import pytest
import torch
from train_graphs import one_thread, tiny_autoencoder, tiny_classifier, tiny_denoiser  # noqa: F401

import graphcore as gc
from graphcore.runtime.config import TrainConfig, guess_task, task_config
from graphcore.runtime.train import Trainer, lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
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


@pytest.mark.slow
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
                                   "best.pt", "status.json"], 0o644)


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- time budgets, --init
@pytest.mark.slow
def test_minutes_without_epochs_trains_until_the_budget_and_ends_annealed(tmp_path):
    events: list[dict] = []
    config = TrainConfig(minutes=0.04, epochs=None, batch_size=128, log_every=5)  # a 2.4 s budget
    assert config.epochs is None
    trainer = Trainer(tiny_classifier(), config, out=tmp_path / "run", events=events.append)
    began = time.monotonic()
    result = trainer.fit()
    took = time.monotonic() - began
    assert result.status == "finished" and "time budget of 0.04 min" in result.message, result.message
    assert 2.4 * 0.5 < took < 2.4 + 2.0  # ran for the budget (less the end it keeps free), not 10 epochs
    assert result.epoch > 1 and result.step > 12  # 12 steps an epoch
    assert trainer.optimizer.param_groups[0]["lr"] < 0.05 * config.lr  # annealed, not cut off at full lr
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all(e["step"] <= e["total_steps"] and e["eta"] >= 0 for e in steps)
    assert max(e["lr"] for e in steps) > 0.5 * config.lr  # it did warm up to the full lr in between
    assert steps[-1]["eta"] < 1.0
    lines = _metrics(tmp_path / "run")
    assert lines[-1]["split"] == "val" and lines[-1]["step"] == result.step  # the last stretch is evaluated
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] is None


def test_epochs_default_to_ten_only_when_no_budget_is_given():
    assert TrainConfig().epochs == 10 and TrainConfig(epochs=None).epochs == 10
    assert TrainConfig(minutes=2).epochs is None and TrainConfig(minutes=2, epochs=3).epochs == 3
    assert TrainConfig.from_dict({"epochs": None, "minutes": 1.5}).epochs is None
    ui = task_config("diffusion")  # the Train panel's diffusion defaults: a budget, no epochs
    assert (ui.epochs, ui.minutes, ui.batch_size, ui.task) == (None, 3.0, 32, "diffusion")
    assert task_config("classify", epochs=7).epochs == 7
    with pytest.raises(gc.GraphError, match="unknown task 'dance'"):
        task_config("dance")


@pytest.mark.slow
def test_the_first_step_event_comes_at_once_then_every_two_seconds_when_steps_are_slow(tmp_path):
    seen: list[tuple[float, dict]] = []
    stepped: list[float] = []
    stop = threading.Event()

    def slow(trainer: Trainer) -> None:
        stepped.append(time.monotonic())
        time.sleep(0.45)
        if trainer.step == 6:
            stop.set()

    Trainer(tiny_classifier(), TrainConfig(epochs=1, batch_size=32, log_every=1000), out=tmp_path / "run",
            events=lambda e: seen.append((time.monotonic(), e)), stop_event=stop, on_step=slow).fit()
    steps = [(at, e) for at, e in seen if e["type"] == "step"]
    assert steps[0][1]["step"] == 1 and steps[0][0] - stepped[0] < 2.0
    assert len(steps) >= 2  # another within the 2.7 s, though log_every is 1000 steps


def test_init_starts_from_the_given_weights(tmp_path):
    source = tmp_path / "source"
    Trainer(tiny_classifier(), TrainConfig(epochs=1), out=source).fit()
    bare = tmp_path / "bare.pt"
    gc.compile(tiny_classifier()).init(source / "last.pt").save(bare)

    runs = iter(range(100))

    def first_loss(graph, **config) -> float:  # the loss of step 0, before any update
        events: list[dict] = []
        stop = threading.Event()
        Trainer(graph, TrainConfig(epochs=1, log_every=1, **config), out=tmp_path / f"run{next(runs)}",
                events=events.append, stop_event=stop, on_step=_stop_at(1, stop)).fit()
        return next(e["loss"] for e in events if e["type"] == "step")

    expected = first_loss(gc.compile(tiny_classifier()).init(source / "last.pt"))
    assert first_loss(tiny_classifier(), init=str(source / "last.pt")) == pytest.approx(expected, abs=1e-6)
    assert first_loss(tiny_classifier(), init=str(bare)) == pytest.approx(expected, abs=1e-6)
    assert first_loss(tiny_classifier()) > expected + 0.5  # a fresh model is far from the trained one


def test_init_weights_that_do_not_fit_are_one_line_naming_the_keys(tmp_path):
    weights = tmp_path / "lenet.pt"
    gc.compile(gc.template("lenet5")).init(seed=0).save(weights)
    with pytest.raises(gc.GraphError) as info:
        Trainer(tiny_classifier(), TrainConfig(epochs=1, init=str(weights)), out=tmp_path / "run").fit()
    message = str(info.value)
    assert len(info.value.diagnostics) == 1 and "\n" not in message
    assert "lenet.pt" in message and "do not fit graph 'tiny_classifier'" in message
    assert "missing: fc.weight, fc.bias" in message and "unexpected: c3.weight" in message
    assert not (tmp_path / "run" / "last.pt").exists()
    with pytest.raises(gc.GraphError, match="nowhere.pt: cannot load weights"):
        Trainer(tiny_classifier(), TrainConfig(epochs=1, init=str(tmp_path / "nowhere.pt")), out=tmp_path / "r2").fit()


def test_a_budget_run_resumes_with_a_new_budget_and_says_so_without_one(tmp_path):
    stop = threading.Event()
    Trainer(tiny_classifier(), TrainConfig(minutes=1), out=tmp_path / "run", stop_event=stop,
            on_step=_stop_at(3, stop)).fit()
    with pytest.raises(gc.GraphError, match="trained for a time budget: give --minutes or --epochs"):
        Trainer.resume(tmp_path / "run")
    result = Trainer.resume(tmp_path / "run", minutes=0.02).fit()
    assert result.status == "finished" and result.step > 3
