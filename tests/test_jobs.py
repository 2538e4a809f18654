"""Background jobs: training in a separate process streams events, stops on request with a
checkpoint, and every failure (an exception, a killed process) arrives as an error event.

Each job is a fresh Python process that imports torch before it trains, so all but the quickest
(a job that fails at once) are slow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_graphs import tiny_classifier, tiny_denoiser

from graphcore.runtime.config import TrainConfig
from graphcore.runtime.jobs import start_sampling, start_training

PNG = b"\x89PNG\r\n\x1a\n"


def collect(job, timeout: float = 300.0) -> list[dict]:
    events = list(job.events(timeout=timeout))
    assert events and events[-1]["type"] in ("done", "error"), f"no terminal event: {events[-3:]}"
    job.join(30)
    return events


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """One diffusion training job for the tests that need one: its run folder and its events."""
    run = tmp_path_factory.mktemp("jobs") / "run"
    job = start_training(tiny_denoiser(), TrainConfig(task="diffusion", epochs=1, batch_size=128), out=run)
    return run, collect(job)


@pytest.mark.slow
def test_a_training_job_streams_its_progress(tmp_path):
    job = start_training(tiny_classifier(), TrainConfig(epochs=2, batch_size=64, log_every=5), out=tmp_path / "run")
    events = collect(job)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "done" and events[-1]["status"] == "finished"
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all(np.isfinite(e["loss"]) and e["lr"] > 0 for e in steps)
    assert steps[0]["step"] == 1 and all(e["total_steps"] == 46 and e["eta"] >= 0 for e in steps)  # 23 an epoch
    assert [e["step"] for e in steps] == sorted(e["step"] for e in steps)
    metrics = [(e["epoch"], e["split"]) for e in events if e["type"] == "metrics"]
    assert metrics == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert "checkpoint" in types and (tmp_path / "run" / "last.pt").exists()
    assert job.finished and not job.running


@pytest.mark.slow
def test_a_diffusion_job_sends_sample_images(diffusion_run):
    samples = [e for e in diffusion_run[1] if e["type"] == "samples"]
    assert len(samples) == 1
    images = samples[0]["images"]
    assert images.shape == (16, 8, 8, 1) and images.dtype == np.uint8
    assert samples[0]["png"].startswith(PNG)


@pytest.mark.slow
def test_stop_request_saves_then_ends(tmp_path):
    job = start_training(tiny_classifier(), TrainConfig(epochs=500, batch_size=16, log_every=1), out=tmp_path / "run")
    for event in job.events(timeout=300):
        if event["type"] == "step" and event["step"] >= 3:
            job.stop()
            break
    events = collect(job)
    assert events[-1]["type"] == "done" and events[-1]["status"] == "stopped"
    assert "stop requested" in events[-1]["message"]
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["step"] == events[-1]["step"] >= 3


def test_a_failing_job_sends_an_error_event(tmp_path):
    job = start_training(tiny_classifier(), TrainConfig(epochs=1, dataset=str(tmp_path / "missing")),
                         out=tmp_path / "run")
    events = collect(job)
    assert [e["type"] for e in events] == ["error"]
    assert "not found" in events[0]["message"]


@pytest.mark.slow
def test_a_killed_job_is_reported_not_silent(tmp_path):
    job = start_training(tiny_classifier(), TrainConfig(epochs=500, batch_size=16, log_every=1), out=tmp_path / "run")
    for event in job.events(timeout=300):
        if event["type"] == "step":
            job.kill()
            break
    events = collect(job)
    assert events[-1]["type"] == "error" and "SIGKILL" in events[-1]["message"]


@pytest.mark.slow
def test_a_sampling_job_previews_each_step(diffusion_run):
    run = diffusion_run[0]
    job = start_sampling(run, steps=6, n=4, preview_every=2)
    events = collect(job)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [2, 4, 6] and steps[0]["images"].shape == (4, 8, 8, 1)
    folder = Path(events[-1]["folder"])  # no folder given: a new one inside the run
    assert events[-1]["status"] == "finished" and folder.parent == run / "samples"
    assert (folder / "samples.npy").exists() and str(folder / "grid.png") in events[-1]["files"]


@pytest.mark.slow
def test_an_alphazero_job_starts_its_self_play_workers(tmp_path):
    """A job's process may start processes of its own (the self-play workers, their Inferencer)."""
    import graphcore as gc

    config = TrainConfig(task="alphazero", game="tictactoe", epochs=1, epoch_steps=4, eval_games=2, simulations=8,
                         batch_size=16, log_every=2, workers=2)
    events = collect(start_training(gc.template("alphazero_tictactoe"), config, out=tmp_path / "run"))
    assert events[-1]["type"] == "done", events[-1]
    assert any(e["type"] == "step" for e in events) and (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_jobs_still_running_at_exit_are_stopped_then_killed(tmp_path, monkeypatch):
    from graphcore.runtime import jobs

    job = start_training(tiny_classifier(), TrainConfig(epochs=1000, batch_size=64), out=tmp_path / "run")
    next(job.events(timeout=120))  # started
    monkeypatch.setattr(jobs, "EXIT_GRACE", 0.5)
    jobs._end_jobs()
    assert job.join(10) is not None and not job.running
