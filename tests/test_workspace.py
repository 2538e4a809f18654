"""The workspace: a user's graphs, runs and imported weights in one folder, kept across restarts,
never written outside it; and ``netcanvas [DIR | G.json | M.onnx]`` that opens it."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from train_graphs import one_thread, tiny_classifier  # noqa: F401

import graphcore as gc
from graphcore.cli.main import main as netcanvas
from graphcore.core.diagnostics import GraphError
from graphcore.core.document import GraphDoc, Node, dumps, loads
from graphcore.runtime.config import TrainConfig
from graphcore.runtime.train import Trainer
from graphcore.runtime.workspace import DRAFT_AGE, DRAFT_LIMIT, NAME_RULE, VANISHED, Workspace, timestamp, write_status

ROOT = Path(__file__).resolve().parent.parent
CLI = sys.modules["graphcore.cli.main"]  # the module (graphcore.cli.main the attribute is its main function)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws").create()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# --- graphs ---------------------------------------------------------------------------------

def test_a_saved_graph_is_listed_loaded_renamed_and_deleted(ws: Workspace):
    path = ws.save_graph("my lenet", gc.template("lenet5"))
    assert path == ws.root / "graphs" / "my lenet.json"
    time.sleep(0.01)
    ws.save_graph("tiny", tiny_classifier())
    listed = ws.graphs()
    assert [g.name for g in listed] == ["tiny", "my lenet"]  # recent first
    lenet = listed[1]
    assert lenet.blocks == len(gc.template("lenet5").nodes)
    assert lenet.params == gc.summary(gc.template("lenet5")).total_params
    assert lenet.error is None and lenet.modified == path.stat().st_mtime

    doc = ws.load_graph("my lenet")
    assert doc.name == "my lenet"  # the name inside follows the name it was saved under
    assert doc.nodes == gc.template("lenet5").nodes and doc.edges == gc.template("lenet5").edges

    ws.rename_graph("my lenet", "lenet v2")
    assert {g.name for g in ws.graphs()} == {"tiny", "lenet v2"}
    assert ws.load_graph("lenet v2").name == "lenet v2"
    with pytest.raises(GraphError, match="no graph named 'my lenet'"):
        ws.load_graph("my lenet")
    with pytest.raises(GraphError, match="already exists"):
        ws.rename_graph("lenet v2", "tiny")  # renaming never overwrites

    ws.delete_graph("lenet v2")
    assert [g.name for g in ws.graphs()] == ["tiny"]
    assert Workspace(ws.root).load_graph("tiny").nodes == tiny_classifier().nodes  # a restart finds it


def test_a_damaged_graph_file_is_listed_with_its_reason(ws: Workspace):
    (ws.graphs_dir / "broken.json").write_text('{"format": "netcanvas.graph", "nodes": [')
    (ws.graphs_dir / "notes.txt").write_text("not a graph")
    ws.save_graph("good", tiny_classifier())
    entries = {g.name: g for g in ws.graphs()}
    assert set(entries) == {"good", "broken"}
    assert entries["broken"].error and "broken.json" in entries["broken"].error
    assert "\n" not in entries["broken"].error and entries["broken"].blocks is None
    with pytest.raises(GraphError, match="broken.json"):
        ws.load_graph("broken")


def test_a_draft_with_errors_is_saved_and_listed_without_params(ws: Workspace):
    draft = GraphDoc(nodes=[Node(id="a", type="no such block"), Node(id="b", type="conv2d")])
    ws.save_graph("draft", draft)
    [entry] = ws.graphs()
    assert (entry.name, entry.blocks, entry.params, entry.error) == ("draft", 2, None, None)
    assert ws.load_graph("draft").nodes == draft.nodes


BAD_NAMES = ["a/b", "a\\b", "..", "up..there", ".hidden", "tab\there", "nul\x00", "new\nline", "x" * 101, "",
             " padded", "../../etc/passwd"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_bad_graph_name_is_refused_in_one_line(ws: Workspace, name: str):
    before = files_under(ws.root)
    for attempt in (lambda: ws.save_graph(name, tiny_classifier()), lambda: ws.load_graph(name),
                    lambda: ws.delete_graph(name)):
        with pytest.raises(GraphError) as refused:
            attempt()
        message = str(refused.value)
        assert NAME_RULE in message and "\n" not in message
    assert files_under(ws.root) == before


@pytest.mark.parametrize("name", ["résumé net", "x" * 100, "v1.2", "ResNet-18 (mine)", "日本語"])
def test_names_that_are_allowed(ws: Workspace, name: str):
    ws.save_graph(name, tiny_classifier())
    assert ws.load_graph(name).name == name and [g.name for g in ws.graphs()] == [name]


def test_saving_over_an_existing_graph_needs_the_flag(ws: Workspace):
    ws.save_graph("g", gc.template("lenet5"))
    with pytest.raises(GraphError, match="already exists.*overwrite"):
        ws.save_graph("g", tiny_classifier())
    assert len(ws.load_graph("g").nodes) == len(gc.template("lenet5").nodes)  # untouched
    ws.save_graph("g", tiny_classifier(), overwrite=True)
    assert ws.load_graph("g").nodes == tiny_classifier().nodes


def test_a_second_tab_saving_over_a_newer_file_is_asked(ws: Workspace):
    ws.save_graph("shared", gc.template("lenet5"))
    seen = {g.name: g.modified for g in ws.graphs()}["shared"]  # both tabs open it
    time.sleep(0.01)
    ws.save_graph("shared", tiny_classifier(), overwrite=True, expected_mtime=seen)  # tab A saves
    with pytest.raises(GraphError, match="another tab"):  # tab B still has the old version
        ws.save_graph("shared", gc.template("lenet5"), overwrite=True, expected_mtime=seen)
    assert ws.load_graph("shared").nodes == tiny_classifier().nodes  # A's work is kept
    ws.save_graph("shared", gc.template("lenet5"), overwrite=True)  # B confirmed
    assert len(ws.load_graph("shared").nodes) == len(gc.template("lenet5").nodes)
    # a tab that saves what it last wrote itself goes through
    mine = ws.graph_path("shared").stat().st_mtime
    ws.save_graph("shared", tiny_classifier(), overwrite=True, expected_mtime=mine)


# --- imported weights -----------------------------------------------------------------------

def test_imported_weights_round_trip_by_key(ws: Workspace):
    from graphcore.runtime.workspace import weights_key

    model = gc.compile(gc.template("lenet5"))
    state = model.state_dict()
    key = weights_key(b"the bytes of model.onnx")
    path = ws.save_weights(key, state)
    assert path == ws.root / ".netcanvas" / "weights" / f"{key}.pt"
    loaded = Workspace(ws.root).load_weights(key)  # after a restart
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert ws.save_weights(key, state) == path  # the same key again keeps the file
    with pytest.raises(GraphError, match="no saved weights"):
        ws.load_weights(weights_key(b"something else"))
    with pytest.raises(GraphError, match="not allowed"):
        ws.save_weights("../../outside", state)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(GraphError, match="cannot read the saved weights"):
        ws.load_weights(key)


# --- drafts -----------------------------------------------------------------------------------

def draft(name: str = "mine", *, unsaved: bool = True, age: float = 0.0) -> dict:
    """A payload as the editor writes it, last written ``age`` seconds ago."""
    return {"document": dumps(tiny_classifier()), "name": name, "unsaved": unsaved, "time": time.time() - age,
            "viewport": {"x": 12.5, "y": -40.0, "zoom": 0.8}, "panel": "train"}


def test_a_draft_round_trips_and_drafts_list_newest_first(ws: Workspace):
    first = draft("first", age=10)
    path = ws.save_draft("tab-1", first)
    assert path == ws.root / ".netcanvas" / "drafts" / "tab-1.json"
    ws.save_draft("tab_2", draft("second", unsaved=False))
    assert not [p for p in ws.drafts_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    entry = Workspace(ws.root).load_draft("tab-1")  # after a restart
    assert (entry.id, entry.name, entry.unsaved, entry.time) == ("tab-1", "first", True, first["time"])
    assert entry.payload["viewport"] == {"x": 12.5, "y": -40.0, "zoom": 0.8} and entry.payload["panel"] == "train"
    assert loads(entry.payload["document"]).nodes == tiny_classifier().nodes
    assert [d.id for d in ws.drafts()] == ["tab_2", "tab-1"]  # newest first
    ws.save_draft("tab-1", draft("first, edited"))  # the same tab again: replaced
    assert [(d.id, d.name) for d in ws.drafts()] == [("tab-1", "first, edited"), ("tab_2", "second")]
    ws.delete_draft("tab-1")
    ws.delete_draft("tab-1")  # gone already: no error
    assert [d.id for d in ws.drafts()] == ["tab_2"]
    with pytest.raises(GraphError, match="no draft 'tab-1'"):
        ws.load_draft("tab-1")


def test_a_damaged_draft_is_skipped_not_a_crash(ws: Workspace, tmp_path: Path):
    ws.save_draft("good", draft())
    (ws.drafts_dir / "torn.json").write_text('{"format": "netcanvas.draft", "document": "{')
    (ws.drafts_dir / "foreign.json").write_text(json.dumps(draft()))  # no format: not written by save_draft
    lacking = {**draft(), "format": "netcanvas.draft"}
    del lacking["unsaved"]
    (ws.drafts_dir / "lacking.json").write_text(json.dumps(lacking))
    (ws.drafts_dir / "list.json").write_text("[1, 2]")
    (ws.drafts_dir / "bad name.json").write_text((ws.drafts_dir / "good.json").read_text())
    (ws.drafts_dir / "deep.json").write_text("[" * 100_000)
    (tmp_path / "elsewhere.json").write_text((ws.drafts_dir / "good.json").read_text())
    (ws.drafts_dir / "linked.json").symlink_to(tmp_path / "elsewhere.json")
    assert [d.id for d in ws.drafts()] == ["good"]
    for name, reason in (("torn", "not a NetCanvas draft"), ("foreign", "not a NetCanvas draft"),
                         ("lacking", "no readable unsaved"), ("linked", "outside the workspace")):
        with pytest.raises(GraphError, match=reason):
            ws.load_draft(name)


@pytest.mark.parametrize("draft_id", ["../outside", "a/b", "", "x" * 129, "a.b", "tab 1", None])
def test_a_draft_id_is_checked(ws: Workspace, draft_id):
    for attempt in (lambda: ws.save_draft(draft_id, draft()), lambda: ws.load_draft(draft_id),
                    lambda: ws.delete_draft(draft_id)):
        with pytest.raises(GraphError, match="draft id .* is not allowed"):
            attempt()
    assert not (ws.root / "outside.json").exists() and not (ws.root / ".netcanvas" / "outside.json").exists()


def test_a_payload_that_could_not_be_read_back_is_refused(ws: Workspace):
    for broken in ({**draft(), "unsaved": "yes"}, {**draft(), "time": float("nan")}, {"name": "x"},
                   {**draft(), "viewport": object()}):
        with pytest.raises(ValueError):
            ws.save_draft("tab", broken)
    assert ws.drafts() == []


def test_pruning_keeps_what_someone_may_miss(ws: Workspace):
    ws.save_draft("fresh-clean", draft(unsaved=False, age=3600))
    ws.save_draft("old-clean", draft(unsaved=False, age=DRAFT_AGE + 60))
    ws.save_draft("old-unsaved", draft(unsaved=True, age=30 * DRAFT_AGE))
    ws.save_draft("open-tab", draft(unsaved=False, age=DRAFT_AGE + 60))  # an open tab's, untouched for a day
    (ws.drafts_dir / "fresh-torn.json").write_text("{")
    (ws.drafts_dir / "old-torn.json").write_text("{")
    past = time.time() - DRAFT_AGE - 60
    os.utime(ws.drafts_dir / "old-torn.json", (past, past))
    left = ws.prune_drafts(keep={"open-tab"})
    assert [d.id for d in left] == ["fresh-clean", "open-tab", "old-unsaved"]  # newest first
    assert sorted(p.stem for p in ws.drafts_dir.glob("*.json")) == ["fresh-clean", "fresh-torn", "old-unsaved",
                                                                     "open-tab"]


def test_pruning_keeps_at_most_the_limit_unsaved_ones_first(ws: Workspace):
    for n in range(DRAFT_LIMIT + 10):  # newest: n = 0
        ws.save_draft(f"d{n}", draft(unsaved=n % 2 == 1, age=n))
    left = ws.prune_drafts(keep={f"d{DRAFT_LIMIT + 9}"})  # the oldest, but an open tab's
    ids = {d.id for d in left}
    assert len(ids) == DRAFT_LIMIT == len(list(ws.drafts_dir.glob("*.json")))
    unsaved = {f"d{n}" for n in range(1, DRAFT_LIMIT + 10, 2)}
    assert unsaved <= ids  # all 30 unsaved ones stay (the open tab's among them)...
    assert ids - unsaved == {f"d{n}" for n in range(0, 2 * (DRAFT_LIMIT - 30), 2)}  # ...and the newest clean ones


def test_drafts_are_never_written_or_removed_outside_the_workspace(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".netcanvas").mkdir()
    (root / ".netcanvas" / "drafts").symlink_to(outside)
    ws = Workspace(root)
    (outside / "theirs.json").write_text(json.dumps({**draft(unsaved=False, age=2 * DRAFT_AGE),
                                                     "format": "netcanvas.draft"}))  # a draft, old and clean
    (outside / "old.json").write_text("{")
    past = time.time() - 2 * DRAFT_AGE
    os.utime(outside / "old.json", (past, past))
    before = files_under(outside)
    with pytest.raises(GraphError, match="outside the workspace"):
        ws.save_draft("mine", draft())
    with pytest.raises(GraphError, match="outside the workspace"):
        ws.delete_draft("old")
    assert ws.drafts() == [] and ws.prune_drafts() == []
    assert files_under(outside) == before


# --- runs -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_a_finished_run_is_listed_with_its_best_metrics(ws: Workspace):
    doc = tiny_classifier()
    run_dir = ws.new_run_dir(doc.name)
    assert ws.run(run_dir.name).status == "running"  # reserved: the caller's process stands in
    result = Trainer(doc, TrainConfig(epochs=1, batch_size=128, device="cpu"), out=run_dir).fit()
    assert result.status == "finished", result.message
    [run] = ws.runs()
    assert (run.name, run.path, run.status, run.graph, run.task, run.device) == (
        "tiny_classifier", run_dir, "finished", "tiny_classifier", "classify", "cpu")
    val = result.metrics["val"]
    assert run.best == pytest.approx({"loss": val["loss"], "accuracy": val["accuracy"]})
    assert run.duration is not None and 0 < run.duration < 600 and run.started
    assert run.message == result.message and run.error is None
    status = json.loads((run_dir / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["ended"]
    # a second run of the same graph gets a folder of its own
    assert ws.new_run_dir(doc.name).name == "tiny_classifier-2"


@pytest.mark.usefixtures("one_thread")
def test_a_stopped_run_says_stopped(ws: Workspace):
    stop = threading.Event()
    stop.set()
    result = Trainer(tiny_classifier(), TrainConfig(epochs=3, device="cpu"), out=ws.new_run_dir("stop me"),
                     stop_event=stop).fit()
    assert result.status == "stopped"
    [run] = ws.runs()
    assert run.status == "stopped" and run.message == result.message


def test_best_metrics_skip_torn_lines(ws: Workspace):
    run = ws.new_run_dir("torn")
    lines = [{"epoch": 1, "split": "val", "loss": 0.9, "accuracy": 0.5},
             {"epoch": 1, "split": "train", "loss": 0.1, "accuracy": 0.99},  # train figures are not the best
             {"epoch": 2, "split": "val", "loss": 0.4, "accuracy": 0.7},
             {"epoch": 3, "split": "val", "loss": 0.6, "accuracy": 0.8}]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '[1, 2]\n{"epoch": 4, "split": "val", "lo'
    (run / "metrics.jsonl").write_text(text)
    assert ws.run("torn").best == {"loss": 0.4, "accuracy": 0.8}


def test_foreign_and_half_written_folders_are_listed_as_unreadable(ws: Workspace):
    (ws.runs_dir / "holiday photos").mkdir()
    (ws.runs_dir / "holiday photos" / "beach.jpg").write_bytes(b"\xff\xd8")
    half = ws.runs_dir / "half"
    half.mkdir()
    (half / ".netcanvas-run").write_text("netcanvas.run 1\n")
    (half / "graph.json").write_text(json.dumps(tiny_classifier().to_dict()))
    (half / "config.json").write_text('{"task": "classi')  # cut short
    (ws.runs_dir / "odd status").mkdir()
    (ws.runs_dir / "odd status" / "status.json").write_text('{"status": "dancing"}')
    (ws.runs_dir / "a file, not a run").write_text("x")
    runs = {r.name: r for r in ws.runs()}
    assert set(runs) == {"holiday photos", "half", "odd status"}
    assert all(r.status == "unreadable" and r.error and "\n" not in r.error for r in runs.values())
    assert "not a NetCanvas run" in runs["holiday photos"].error
    assert "half-written" in runs["half"].error and "config.json" in runs["half"].error
    assert runs["half"].graph == "tiny_classifier"
    assert "status.json" in runs["odd status"].error
    with pytest.raises(GraphError, match="not a NetCanvas run folder"):
        ws.delete_run("holiday photos")  # a user's folder is left alone
    assert (ws.runs_dir / "holiday photos" / "beach.jpg").exists()
    ws.delete_run("half")
    assert not half.exists()


def test_an_old_run_without_status_is_finished(ws: Workspace):
    run = ws.runs_dir / "old"
    run.mkdir()
    (run / "graph.json").write_text(json.dumps(tiny_classifier().to_dict()))
    (run / "config.json").write_text(json.dumps({"task": "classify", "device": "cpu"}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "split": "val", "loss": 0.5}) + "\n")
    torch.save({"model": {}}, run / "best.pt")
    [entry] = ws.runs()
    assert (entry.status, entry.task, entry.best, entry.device) == ("finished", "classify", {"loss": 0.5}, "cpu")


def test_a_running_run_reads_running_while_its_process_lives(ws: Workspace):
    run = ws.new_run_dir("live")
    write_status(run, status="running", pid=os.getpid(), device="cpu", started=timestamp())
    time.sleep(0.01)
    entry = ws.run("live")
    assert (entry.status, entry.device) == ("running", "cpu") and entry.duration > 0
    with pytest.raises(GraphError, match="running: stop it first"):
        ws.delete_run("live")
    assert run.exists()

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_status(run, pid=int(ended.stdout))  # that process has exited (and was waited for)
    entry = ws.run("live")
    assert (entry.status, entry.message) == ("failed", VANISHED)
    ws.delete_run("live")
    assert not run.exists() and ws.runs() == []


def test_a_pid_taken_over_by_a_newer_process_is_not_the_run(ws: Workspace):
    run = ws.new_run_dir("before the reboot")
    write_status(run, status="running", pid=os.getpid(), started="2020-01-01T00:00:00+00:00")  # this process is newer
    assert ws.run("before the reboot").status == ("failed" if Path("/proc/self/stat").exists() else "running")


def test_a_zombie_process_is_not_running(ws: Workspace):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _is_zombie(child.pid):
        time.sleep(0.05)
    try:
        run = ws.new_run_dir("zombie")
        write_status(run, status="running", pid=child.pid)
        assert ws.run("zombie").status == "failed"  # exited; only its parent has not waited yet
    finally:
        child.wait()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


# --- nothing outside the workspace ------------------------------------------------------------

def test_links_out_of_the_workspace_are_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps(tiny_classifier().to_dict()))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "graphs").symlink_to(outside)
    (root / "runs").symlink_to(outside)
    (root / ".netcanvas").symlink_to(outside)
    ws = Workspace(root)
    before = files_under(outside)
    for attempt in (lambda: ws.save_graph("g", tiny_classifier()), lambda: ws.load_graph("secret"),
                    lambda: ws.new_run_dir("g"), lambda: ws.save_weights("k", {"w": torch.zeros(1)}),
                    lambda: ws.delete_graph("secret"), lambda: ws.delete_run("g"), ws.create):
        with pytest.raises(GraphError, match="outside the workspace"):
            attempt()
    assert ws.graphs() == [] and ws.runs() == []
    assert files_under(outside) == before


def test_a_linked_file_inside_graphs_is_not_followed_out(ws: Workspace, tmp_path: Path):
    outside = tmp_path / "private.json"
    outside.write_text(json.dumps(tiny_classifier().to_dict()))
    (ws.graphs_dir / "sneaky.json").symlink_to(outside)
    (ws.runs_dir / "sneaky").symlink_to(tmp_path)
    [entry] = ws.graphs()
    assert entry.name == "sneaky" and "outside the workspace" in entry.error
    with pytest.raises(GraphError, match="outside the workspace"):
        ws.load_graph("sneaky")
    with pytest.raises(GraphError, match="outside the workspace"):
        ws.save_graph("sneaky", gc.template("lenet5"), overwrite=True)
    [run] = ws.runs()
    assert run.status == "unreadable"
    with pytest.raises(GraphError, match="outside the workspace"):
        ws.delete_run("sneaky")
    assert outside.read_text() == json.dumps(tiny_classifier().to_dict()) and tmp_path.exists()


# --- the command line -------------------------------------------------------------------------

@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The options the CLI hands to the editor, instead of serving (the real server runs in the slow tests)."""
    calls: list[dict] = []
    monkeypatch.setattr(CLI, "_editor_entry_point", lambda: lambda **options: calls.append(options))
    monkeypatch.setattr(CLI, "_cannot_listen", lambda host, port: None)
    return calls


def test_the_editor_argument_is_a_workspace_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      started: list[dict], capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    assert netcanvas([]) == 0  # the current folder
    assert started[-1]["workspace"] == str(tmp_path) and "graph" not in started[-1]
    assert (tmp_path / "graphs").is_dir() and (tmp_path / "runs").is_dir()
    assert netcanvas(["nets/mine", "--port", "9000"]) == 0  # made, with its folders
    assert started[-1]["workspace"] == str(tmp_path / "nets" / "mine") and started[-1]["port"] == 9000
    assert (tmp_path / "nets" / "mine" / "graphs").is_dir()
    gc.save(tiny_classifier(), tmp_path / "nets" / "g.json")
    assert netcanvas(["nets/g.json"]) == 0  # a file opens, the current folder is the workspace
    assert started[-1]["graph"] == str(tmp_path / "nets" / "g.json") and started[-1]["workspace"] == str(tmp_path)
    assert netcanvas(["resnet18"]) == 0  # a template name still works
    assert started[-1]["graph"] == "resnet18"
    (tmp_path / "notes.txt").write_text("hello")
    for argument, problem in (("notes.txt", "not a folder, a .json graph or an .onnx model"),
                              ("missing.json", "no such graph file")):
        with pytest.raises(SystemExit) as exited:
            netcanvas([argument])
        assert exited.value.code == 2
        assert problem in capsys.readouterr().err
    assert len(started) == 4


def test_help_says_the_bare_command_starts_the_editor(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        netcanvas(["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "With no command, start the editor" in shown
    for option in ("--port", "--host", "--token", "--token-file", "DIR | G.json | M.onnx", "workspace"):
        assert option in shown


def test_make_run_passes_its_arguments():
    [line] = re.findall(r'`(make run ARGS="[^"`]*")`', (ROOT / "README.md").read_text(encoding="utf-8"))
    words = shlex.split(line)
    dry = subprocess.run([words[0], "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)  # -n: print only
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/netcanvas --port 9000" in dry.stdout.splitlines()


# --- a real server, started as the README says ----------------------------------------------------

def readme_editor_lines() -> list[str]:
    """The command lines of the README's editor block (the one that starts with ``.venv/bin/netcanvas``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```\n(.*?)```", text, re.S) if b.startswith(".venv/bin/netcanvas")]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def port_of(line: str) -> int:
    words = shlex.split(line)
    return int(words[words.index("--port") + 1]) if "--port" in words else 8080


def target_of(line: str) -> str:
    """The editor's argument in a ``netcanvas`` line (".", when none is given)."""
    words = shlex.split(line)[1:]
    return next((w for i, w in enumerate(words) if not w.startswith("-") and words[i - 1] != "--port"), ".")


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/")
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except OSError:
        return False


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no pytest or NiceGUI test markers (NiceGUI would think it is under test)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "NICEGUI", "NETCANVAS_"))}


def serve(script: str, folder: Path, port: int) -> None:
    """Run ``script`` (bash) in ``folder`` until the editor answers on ``port``, then stop it."""
    with open(folder / "log", "w") as log:
        process = subprocess.Popen(["bash", "-c", script], cwd=folder, env=user_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not answers(port):
            assert process.poll() is None, (folder / "log").read_text()
            assert time.monotonic() < deadline, (folder / "log").read_text()
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # bash and the netcanvas it started
        process.wait(timeout=60)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_the_readme_editor_lines_serve_a_workspace(tmp_path: Path):
    lines = readme_editor_lines()
    assert lines[0].startswith(".venv/bin/netcanvas") and "source .venv/bin/activate" in lines
    busy = sorted({port_of(line) for line in lines if "netcanvas" in line if not port_is_free(port_of(line))})
    if busy:
        pytest.skip(f"port {busy} is taken on this machine, and the README's lines use it")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")  # the lines run as written, in a folder of their own
    gc.save(gc.template("lenet5"), tmp_path / "lenet.json")
    prefix = ""
    for line in lines:
        if line.startswith("source "):  # it holds for the lines after it, as in a shell
            prefix = line + "\n"
            help_text = subprocess.run(["bash", "-c", prefix + "netcanvas --help"], cwd=tmp_path, env=user_env(),
                                       capture_output=True, text=True)
            assert help_text.returncode == 0 and "--token-file" in help_text.stdout, help_text.stderr
            continue
        serve(prefix + line, tmp_path, port_of(line))
        target = target_of(line)
        if not target.endswith((".json", ".onnx")):
            assert (tmp_path / target / "graphs").is_dir() and (tmp_path / target / "runs").is_dir(), line


@pytest.mark.slow
def test_netcanvas_serves_and_makes_the_workspace(tmp_path: Path):
    port = next(p for p in range(18000, 18100) if port_is_free(p))
    serve(f"{ROOT / '.venv/bin/netcanvas'} --port {port} {tmp_path / 'fresh'}", tmp_path, port)
    assert (tmp_path / "fresh" / "graphs").is_dir() and (tmp_path / "fresh" / "runs").is_dir()
