"""Runs, jobs, export with weights and samples in the editor (NiceGUI's simulated user).

Jobs belong to the server: a second user (another browser) sees and stops a job the first one
started. Runs belong to the workspace: they are listed from disk, as after a server restart.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from nicegui import ui
from nicegui.testing import User
from test_app_user import SLOW, open_editor

import graphcore as gc
from app.editor import EDITORS, Editor
from app.jobs import JOBS
from graphcore.runtime.config import TASK_DEFAULTS, TrainConfig
from graphcore.runtime.train import Trainer, load_run
from graphcore.runtime.workspace import Workspace, write_status

PROCESS = 900  # retries of 0.1 s for a job process: it imports torch first, on a busy machine


@pytest.fixture
def workspace(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The shared workspace, also as the current folder (where a CLI-style run would land)."""
    monkeypatch.chdir(workspace.root)
    return workspace


@pytest.fixture
async def user(workspace: Workspace, user: User) -> AsyncIterator[User]:
    """The simulated user, with the app serving ``workspace``; jobs left running are ended."""
    JOBS.forget_ended()  # the server is shared by the tests: start each without the jobs of others
    yield user
    for tracked in JOBS.active():
        tracked.job.kill()
        tracked.job.join(10)
    JOBS.pump()
    JOBS.forget_ended()


def editor_of(user: User) -> Editor:
    return EDITORS[user.client.id]


def finished_run(workspace: Workspace, epochs: int = 1) -> Path:
    """A real run of lenet5 on digits, trained here (in this process) into the workspace."""
    run_dir = workspace.new_run_dir("lenet5")
    Trainer(gc.template("lenet5"), TrainConfig(epochs=epochs, batch_size=128), out=run_dir).fit()
    return run_dir


async def wait_for(condition: Callable[[], bool], retries: int = PROCESS) -> None:
    for _ in range(retries):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def open_tab(user: User, tab: str) -> None:
    user.find(kind=ui.tab, content=tab).click()
    await asyncio.sleep(0.1)


def shows_run(user: User, name: str) -> bool:
    """Whether the Training panel's status names the run ``name`` ("Training NAME on cpu…", "NAME: epoch 1, …")."""
    status = editor_of(user).train_panel.status.text
    return f"Training {name} " in status or status.startswith(f"{name}: ")


def val_lines(run_dir: Path) -> list[dict]:
    return [line for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if line["split"] == "val"]


@pytest.mark.slow
async def test_a_job_started_in_one_tab_is_seen_and_stopped_from_another(user: User, create_user, workspace):
    await open_editor(user)
    await open_tab(user, "Training")
    user.find("train-epochs").clear().type("500")
    user.find("train-start").click()
    await wait_for(lambda: JOBS.latest("training") is not None)
    run_dir = JOBS.latest("training").run_dir
    await wait_for(lambda: (run_dir / "metrics.jsonl").is_file() and val_lines(run_dir))
    first = val_lines(run_dir)[0]
    # the log counts epochs as metrics.jsonl does
    await user.should_see(f"epoch {first['epoch']} val: loss {first['loss']:.4g}", retries=SLOW)

    other = create_user()  # another browser: its own page, the same server
    await open_editor(other)
    await open_tab(other, "Training")
    await other.should_see("step", retries=SLOW)  # the job's progress, followed from this tab too
    chart = next(iter(other.find("train-chart").elements))
    assert chart.options["series"][0]["data"], "the other tab replays the job's chart"
    assert 0 < chart.options["series"][0]["data"][0][1] < 10  # a loss, not garbage
    await open_tab(other, "Runs")
    await other.should_see(marker=f"run-{run_dir.name}", retries=SLOW)
    other.find(f"run-stop-{run_dir.name}").click()
    await other.should_see(f"Stopping {run_dir.name}", retries=SLOW)
    # Start right after Stop: the first tab's Start comes back at once; it waits for the stopping
    # job to save and end, then starts
    start = editor_of(user).train_panel.start_button
    await wait_for(lambda: start.enabled, retries=SLOW)
    first = JOBS.latest("training")
    still_stopping = not first.ended
    user.find("train-start").click()
    if still_stopping:
        await user.should_see(f"started once run {run_dir.name} had ended", retries=PROCESS)
    await wait_for(lambda: JOBS.latest("training").run_dir != run_dir)
    assert workspace.run(run_dir.name).status == "stopped"
    assert (run_dir / "last.pt").is_file()
    second = JOBS.latest("training")
    await wait_for(lambda: len(second.events) > 0)
    user.find("train-stop").click()
    await wait_for(lambda: second.ended)
    await user.should_see("stopped", retries=SLOW)


@pytest.mark.slow
async def test_after_a_reload_the_job_shows_and_a_second_start_says_why_it_cannot(user: User, create_user,
                                                                                   workspace):
    earlier = finished_run(workspace)
    await open_editor(user)
    await open_tab(user, "Training")
    user.find("train-epochs").clear().type("500")
    user.find("train-start").click()
    await wait_for(lambda: JOBS.latest("training") is not None)
    running = JOBS.latest("training")
    await user.open("/")  # a reload: a new page, which did not start the job, shows it
    await user.should_see(marker="canvas", retries=SLOW)
    await open_tab(user, "Training")
    await wait_for(lambda: shows_run(user, running.run_dir.name))
    assert editor_of(user).train_panel.tracked is running

    other = create_user()
    await open_editor(other)
    await open_tab(other, "Training")
    await wait_for(lambda: shows_run(other, running.run_dir.name))
    assert not editor_of(other).train_panel.start_button.enabled  # it follows the running job
    await open_tab(other, "Runs")
    await other.should_see(marker=f"run-resume-{earlier.name}", retries=SLOW)
    other.find(f"run-resume-{earlier.name}").click()
    await other.should_see(f"Cannot start: run {running.run_dir.name} is training; stop it first", retries=SLOW)
    assert len(JOBS.active("training")) == 1

    user.find("train-stop").click()  # from the reloaded page
    await wait_for(lambda: running.ended)
    await user.should_see("stopped", retries=SLOW)


@pytest.mark.slow
async def test_runs_are_listed_from_disk_as_after_a_restart(user: User, create_user, workspace):
    first, second = finished_run(workspace), finished_run(workspace, epochs=2)
    assert not JOBS.get("training", first)  # the server never ran them: a restarted one
    await open_editor(user)
    await open_tab(user, "Runs")
    await user.should_see(marker=f"run-{first.name}", retries=SLOW)
    await user.should_see(marker=f"run-{second.name}")
    status = next(iter(user.find(f"run-status-{second.name}").elements))
    assert status.text == "finished"
    best = min(line["loss"] for line in val_lines(second))
    await user.should_see(f"loss {best:.4g}")
    user.find(f"run-check-{first.name}").click()
    user.find(f"run-check-{second.name}").click()
    chart = next(iter(user.find("runs-chart").elements))
    await wait_for(lambda: len(chart.options["series"]) == 4, retries=SLOW)  # loss and accuracy of each
    losses = {s["name"]: s["data"] for s in chart.options["series"]}
    assert losses[f"{second.name} loss"] == [[line["epoch"], line["loss"]] for line in val_lines(second)]

    again = create_user()  # a new page on the same workspace lists them too
    await open_editor(again)
    await open_tab(again, "Runs")
    await again.should_see(marker=f"run-{second.name}", retries=SLOW)


@pytest.mark.slow
async def test_a_finished_run_is_deleted_after_asking(user: User, workspace):
    run_dir = finished_run(workspace)
    await open_editor(user)
    await open_tab(user, "Runs")
    await user.should_see(marker=f"run-{run_dir.name}", retries=SLOW)
    user.find(f"run-delete-{run_dir.name}").click()
    await user.should_see(f"Delete run {run_dir.name}?")
    assert run_dir.exists()  # only asked so far
    user.find("run-delete-ok").click()
    await user.should_see(f"Deleted run {run_dir.name}")
    assert not run_dir.exists()
    await user.should_not_see(marker=f"run-{run_dir.name}", retries=SLOW)


@pytest.mark.slow
async def test_a_running_run_cannot_be_deleted(user: User, workspace):
    run_dir = finished_run(workspace)
    write_status(run_dir, status="running", pid=os.getpid())  # its process (this one) is alive
    await open_editor(user)
    await open_tab(user, "Runs")
    await user.should_see(marker=f"run-{run_dir.name}", retries=SLOW)
    user.find(f"run-delete-{run_dir.name}").click()
    await user.should_see(f"Cannot delete {run_dir.name}: it is running")
    await user.should_not_see(f"Delete run {run_dir.name}?")
    assert (run_dir / "best.pt").is_file()


@pytest.mark.slow
async def test_export_onnx_with_a_runs_weights_matches_the_runs_model(user: User, workspace):
    run_dir = finished_run(workspace)
    await open_editor(user)
    user.find("export-onnx").click()
    await user.should_see(marker="export-weights")
    user.find("export-weights").click()
    user.find(f"run {run_dir.name}: best").click()
    user.find("export-go").click()
    await user.should_see(f"Exported with run {run_dir}", retries=PROCESS)
    await wait_for(lambda: user.download.http_responses, retries=SLOW)
    data = user.download.http_responses[-1].content

    model, _ = load_run(run_dir, checkpoint="best", ema=False)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    fresh = gc.compile(gc.template("lenet5")).init(seed=0)(x).detach().numpy()
    assert not np.allclose(got, fresh, atol=1e-3)  # not fresh weights


@pytest.mark.slow
async def test_export_python_with_a_runs_weights_comes_with_its_state_dict(user: User, workspace):
    run_dir = finished_run(workspace)
    await open_editor(user)
    await open_tab(user, "Runs")
    await user.should_see(marker=f"run-{run_dir.name}", retries=SLOW)
    user.find(f"run-export-{run_dir.name}").click()  # preselects the run's best weights
    await user.should_see(marker="export-go")
    user.find("export-go").click()
    await user.should_see(f"with run {run_dir}", retries=PROCESS)
    await user.should_see(marker="export-download-pt")
    await wait_for(lambda: len(user.download.http_responses) >= 2, retries=SLOW)
    source, weights = (r.content for r in user.download.http_responses[-2:])
    namespace: dict = {}
    exec(compile(source.decode(), "lenet5.py", "exec"), namespace)  # noqa: S102 - the file we generated
    path = workspace.root / "exported.pt"
    path.write_bytes(weights)
    net = namespace["build_model"](str(path)).eval()
    model, _ = load_run(run_dir, checkpoint="best", ema=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
    assert isinstance(torch.load(io.BytesIO(weights), weights_only=True), dict)


@pytest.mark.slow
async def test_saved_samples_are_listed_with_downloads(user: User, workspace):
    from graphcore.runtime import diffusion

    run_dir = finished_run(workspace)
    folder = run_dir / "samples" / "20260101-120000"
    folder.mkdir(parents=True)
    grid = diffusion.png_bytes(torch.rand(4, 1, 8, 8), scale=2)
    (folder / "grid.png").write_bytes(grid)
    np.save(folder / "samples.npy", np.zeros((4, 8, 8), np.uint8))
    await open_editor(user)
    await open_tab(user, "Samples")
    await user.should_see(f"{run_dir.name} · 20260101-120000", retries=SLOW)
    downloads = list(user.find("samples-download-grid.png").elements)
    assert len(downloads) == 1
    user.find("samples-download-grid.png").click()
    assert (await user.download.next(timeout=10)).content == grid


@pytest.mark.slow
async def test_saved_samples_of_points_show_their_scatter(user: User, workspace):
    from graphcore.runtime import diffusion

    run_dir = finished_run(workspace)
    folder = run_dir / "samples" / "20260101-130000"
    folder.mkdir(parents=True)
    points = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    scatter = diffusion.scatter_png(points, points)
    (folder / "scatter.png").write_bytes(scatter)
    np.save(folder / "samples.npy", points)
    await open_editor(user)
    await open_tab(user, "Samples")
    await user.should_see(f"{run_dir.name} · 20260101-130000", retries=SLOW)
    user.find("samples-download-scatter.png").click()
    assert (await user.download.next(timeout=10)).content == scatter


@pytest.mark.slow
async def test_training_can_start_from_a_runs_weights(user: User, workspace):
    earlier = finished_run(workspace)
    await open_editor(user)
    await open_tab(user, "Training")
    user.find("train-init").click()
    user.find(f"run {earlier.name}: best").click()
    user.find("train-epochs").clear().type("1")
    user.find("train-start").click()
    await wait_for(lambda: JOBS.latest("training") is not None)
    run = JOBS.latest("training")
    await wait_for(lambda: run.ended)
    assert json.loads((run.run_dir / "config.json").read_text())["init"] == str(earlier / "best.pt")
    assert workspace.run(run.run_dir.name).status == "finished"
    first = val_lines(run.run_dir)[0]
    assert first["loss"] < val_lines(earlier)[0]["loss"] + 0.5  # it went on from trained weights


async def test_a_template_that_recommends_training_settings_fills_the_train_panel_with_them(user: User):
    await open_editor(user)
    editor = editor_of(user)
    assert await editor.open_template("diffusion_mlp")
    panel = editor.train_panel
    assert panel.task.value == "diffusion"
    assert (panel.dataset.value, panel.epochs.value, panel.minutes.value, panel.batch.value, panel.lr.value) == \
        ("swissroll", None, 1, 1024, 0.01)  # its meta.train: points in big batches, not digits
    assert await editor.open_template("unet_ddpm_small")  # recommends nothing: the task's own defaults
    assert (panel.task.value, panel.dataset.value, panel.epochs.value, panel.minutes.value, panel.batch.value,
            panel.lr.value) == ("diffusion", "digits", None, 3.0, 32, None)


async def test_a_task_chosen_in_the_train_panel_brings_its_own_settings_into_the_run(user: User):
    await open_editor(user)
    panel = editor_of(user).train_panel
    panel.dataset.value = "my_digits.npz"
    for task in ("muzero", "alphazero", "gan", "classify"):
        panel.task.value = task  # as the user's choice in the select
        own = TASK_DEFAULTS[task]
        assert (panel.epochs.value, panel.minutes.value, panel.batch.value, panel.lr.value) == (
            own.get("epochs"), own.get("minutes"), own.get("batch_size", 64), own.get("lr"))
        config = panel.config()  # what Start trains with: the fields, and the settings without a field
        assert (config.task, config.batch_size, config.weight_decay, config.schedule) == (
            task, own.get("batch_size", 64), own.get("weight_decay", 0.01), own.get("schedule", "cosine"))
        assert config.dataset == "my_digits.npz"  # what the user typed stays


@pytest.mark.parametrize("train", [None, "fast", {"batch_size": 0}, {"lr": "high"}, {"dataset": 7},
                                   {"minutes": -1}])
def test_recommended_settings_that_are_not_valid_are_left_out(train):
    from app.runs import recommended

    assert recommended(train, "diffusion") == {}
    assert recommended({"dataset": "moons", "shuffle": True}, "diffusion") == {"dataset": "moons"}


@pytest.mark.slow
async def test_sampling_a_diffusion_run_shows_a_live_grid_and_keeps_the_samples(user: User, workspace):
    from train_graphs import tiny_denoiser

    await open_editor(user)
    editor = editor_of(user)
    editor.load(tiny_denoiser())
    await open_tab(user, "Training")
    assert editor.train_panel.task.value == "diffusion"  # guessed from the graph's two inputs
    user.find("train-epochs").clear().type("1")
    user.find("train-minutes").clear()
    user.find("train-start").click()
    await user.should_see("finished", retries=1200)
    run_dir = Path(JOBS.latest("training").run_dir)
    await open_tab(user, "Runs")
    await user.should_see(marker=f"run-sample-{run_dir.name}", retries=SLOW)
    user.find(f"run-sample-{run_dir.name}").click()  # the Samples panel, on this run
    assert editor.sample_panel.run_dir.value == str(run_dir)
    user.find("sample-steps").clear().type("4")
    user.find("sample-count").clear().type("4")
    user.find("sample-start").click()
    # Four steps can finish between two polls, so wait for the job's last message (where the
    # samples are); the grid is only ever filled from the denoising-step events.
    await user.should_see("wrote", retries=1200)
    grid = editor.sample_panel.grid
    assert grid.visible and grid.source.startswith("data:image/png;base64,")
    (folder,) = (run_dir / "samples").iterdir()  # kept in the run: runs/NAME/samples/STAMP/
    await user.should_see(f"{run_dir.name} · {folder.name}", retries=SLOW)
    user.find("samples-download-samples.npy").click()
    assert (await user.download.next(timeout=10)).content == (folder / "samples.npy").read_bytes()
