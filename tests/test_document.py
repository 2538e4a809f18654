"""The graph document: load, save, round trips, migrations and bad files."""

import json
import os
import stat

import pytest

import graphcore as gc
from graphcore.core import document


def test_round_trip_load_save_load_is_identical(tmp_path):
    doc = gc.template("lenet5")
    doc.ui["positions"] = {"x": [0, 0], "c1": [220, 0]}
    doc.meta["notes"] = "first try"
    path = tmp_path / "g.json"
    gc.save(doc, path)
    again = gc.load(path)
    assert again == doc
    gc.save(again, tmp_path / "g2.json")
    assert (tmp_path / "g2.json").read_text() == path.read_text()


def test_saved_file_leaves_default_ports_out(tmp_path):
    path = tmp_path / "g.json"
    gc.save(gc.template("lenet5"), path)
    data = json.loads(path.read_text())
    assert data["format"] == "netcanvas.graph" and data["version"] == 1
    assert data["edges"][0] == {"src": "x", "dst": "c1"}


def test_save_is_atomic_and_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "g.json"
    gc.save(gc.template("lenet5"), path)
    before = path.read_text()

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(document.os, "fsync", crash)
    doc = gc.template("lenet5")
    doc.name = "changed"
    with pytest.raises(gc.GraphError, match="No space left"):
        gc.save(doc, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"], "the temp file must be removed"


def test_save_to_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(gc.GraphError, match="cannot write"):
        gc.save(gc.template("lenet5"), tmp_path / "nope" / "g.json")


def test_migration_table_upgrades_an_older_version(monkeypatch):
    def v0_to_v1(data):
        # v0 called edges "links" and had "from"/"to"
        data["edges"] = [{"src": e["from"], "dst": e["to"]} for e in data.pop("links")]
        return data

    monkeypatch.setitem(document.MIGRATIONS, 0, v0_to_v1)
    old = {
        "format": "netcanvas.graph", "version": 0, "name": "old",
        "nodes": [{"id": "x", "type": "input", "params": {"shape": [4]}}, {"id": "y", "type": "output"}],
        "links": [{"from": "x", "to": "y"}],
    }
    doc = gc.loads(json.dumps(old))
    assert doc.version == 1
    assert doc.edges == [gc.Edge(src="x", dst="y")]
    assert gc.validate(doc) == []


def test_version_without_a_migration_is_refused():
    text = json.dumps({"format": "netcanvas.graph", "version": 0, "nodes": [], "edges": []})
    with pytest.raises(gc.GraphError, match="too old"):
        gc.loads(text)


def test_newer_version_is_refused_with_advice():
    text = json.dumps({"format": "netcanvas.graph", "version": 7, "nodes": [], "edges": []})
    with pytest.raises(gc.GraphError, match="newer NetCanvas .*version 7.*Update NetCanvas"):
        gc.loads(text)


def test_truncated_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(document.dumps(gc.template("lenet5"))[:200])
    with pytest.raises(gc.GraphError) as info:
        gc.load(path)
    message = str(info.value)
    assert f"{path}:" in message and "invalid JSON" in message
    line, column = message.split(f"{path}:")[1].split(":")[:2]
    assert int(line) > 1 and int(column) >= 1


@pytest.mark.parametrize("text, expected", [
    ('{"format": "keras", "nodes": []}', "not a NetCanvas graph"),
    ('[1, 2]', "must be a JSON object"),
    ('{"format": "netcanvas.graph", "version": "one"}', "'version' must be a whole number"),
    ('{"format": "netcanvas.graph", "nodes": [{"id": "a"}]}', "nodes.0.type: field required"),
    ('{"format": "netcanvas.graph", "nodes": [{"id": "a", "type": "relu", "parms": {}}]}', "unknown field"),
])
def test_malformed_documents_get_one_clear_line(text, expected):
    with pytest.raises(gc.GraphError) as info:
        gc.loads(text, source="g.json")
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_load_problem_names_the_node():
    text = '{"format": "netcanvas.graph", "nodes": [{"id": "c1", "type": "conv2d", "params": 5}]}'
    with pytest.raises(gc.GraphError) as info:
        gc.loads(text)
    assert info.value.diagnostics[0].node_id == "c1"


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(gc.GraphError, match="cannot read"):
        gc.load(tmp_path / "missing.json")


def test_templates_are_listed_and_unknown_names_get_a_suggestion():
    assert "lenet5" in gc.templates()
    with pytest.raises(gc.GraphError, match="did you mean 'lenet5'"):
        gc.template("lenet")


@pytest.mark.parametrize("umask, before, expected", [
    (0o022, None, 0o644),      # a new file gets what the user's umask gives any new file
    (0o077, None, 0o600),
    (0o022, 0o640, 0o640),     # a replaced file keeps its mode
    (0o077, 0o664, 0o664),
])
def test_saved_files_keep_the_users_umask_or_the_replaced_files_mode(tmp_path, umask, before, expected):
    path = tmp_path / "g.json"
    if before is not None:
        path.write_text("{}")
        path.chmod(before)
    old = os.umask(umask)
    try:
        gc.save(gc.template("lenet5"), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected
    assert gc.load(path).name == "lenet5"


def test_a_lone_surrogate_in_a_label_saves_as_utf8_and_loads_back_the_same(tmp_path):
    doc = gc.template("lenet5")
    doc.nodes[1].label = "bad \ud800 label ü"
    path = tmp_path / "g.json"
    gc.save(doc, path)
    text = path.read_bytes().decode("utf-8")  # the file is valid UTF-8
    assert "\\ud800" in text and "ü" in text  # the surrogate is escaped, other text stays readable
    assert gc.load(path) == doc
    assert gc.loads(document.dumps(doc)) == doc


def test_the_compact_text_is_one_line_of_the_same_document():
    doc = gc.template("lenet5")
    doc.nodes[1].label = "bad \ud800 label ü"
    compact = document.dumps(doc, compact=True)
    assert compact.count("\n") == 1 and len(compact) < len(document.dumps(doc))
    assert "\\ud800" in compact and "ü" in compact
    assert gc.loads(compact) == doc


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_json_nested_too_deeply_is_one_line(depth):
    text = '{"format": "netcanvas.graph", "meta": ' + '{"a": ' * depth + '1' + '}' * depth + '}'
    with pytest.raises(gc.GraphError) as info:
        gc.loads(text, source="deep.json")
    assert len(info.value.diagnostics) == 1
    message = str(info.value)
    assert "deep.json" in message and "nested" in message and "\n" not in message


def test_every_document_that_loads_also_saves_however_deep_its_meta():
    deepest = document.MAX_DEPTH - 2  # the document and its meta are two levels themselves
    data = {"format": "netcanvas.graph", "meta": {"m": _nested(deepest)}}
    doc = gc.loads(json.dumps(data))
    assert gc.loads(document.dumps(doc)) == doc
    inner = {"format": "netcanvas.graph", "subgraphs": {"s": {"meta": {"m": _nested(deepest - 2)}}}}
    doc = gc.loads(json.dumps(inner))
    assert gc.loads(document.dumps(doc)) == doc
    data["meta"] = {"m": _nested(deepest + 1)}
    with pytest.raises(gc.GraphError, match=f"nested more than {document.MAX_DEPTH} levels deep.*meta"):
        gc.loads(json.dumps(data), source="g.json")


def test_a_document_too_deep_to_write_is_one_line():
    doc = gc.template("lenet5")
    doc.meta["m"] = _nested(2_000)
    with pytest.raises(gc.GraphError, match="'lenet5' cannot be written as JSON: .*depth"):
        document.dumps(doc)
