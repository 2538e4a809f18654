"""No code runs from a graph's text, every id that validates exports, exporting Python builds no
weights, and the editor's ONNX export leaves nothing behind (issue 13: findings 1, 5 and 8).

A hostile text goes into every place a user can type one (graph name, node labels, subgraph name
and key); the exported file is written as the CLI and the editor write it (UTF-8 bytes) and run in
a fresh interpreter, which decodes it exactly as a user's Python would.
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import keyword
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import tokenize
from concurrent.futures import ThreadPoolExecutor

import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphcore as gc
from graphcore.cli import main
from graphcore.core.analysis import RESERVED_IDS, check_id
from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.interchange.codegen import _read_as_written, comment

MARKER = "PWNED"
RUN = f"open({MARKER!r}, 'w')"  # what every payload tries to run: it would create the marker file
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]

PAYLOADS = {
    # encoding declarations: a cookie makes Python decode the file another way, where escaped text is code
    "utf-7 cookie": f"# -*- coding: utf-7 -*- +AAo-{RUN}+ACM-",
    "utf-7 cookie, label indent": f"x coding: utf-7 +AAo-        {RUN}  +ACM-",
    "coding= form": f"coding=utf-7\n+AAo-{RUN}",
    "vim fileencoding": f"vim: set fileencoding=latin-1 : é\n{RUN}",
    "unicode_escape cookie": f"coding: unicode_escape\n{RUN}\n        {RUN}\n",
    "raw_unicode_escape cookie": f"coding: raw_unicode_escape \\u000a{RUN}",
    "upper-case cookie": f"CODING: UTF-7 +AAo-{RUN}",
    # every Unicode line break
    **{f"line break {lb!r}": f"x{lb}{RUN}{lb}        {RUN}{lb}" for lb in LINE_BREAKS},
    # quotes, backslashes and characters that end strings, lines or files
    "quotes": f"'); {RUN}; ('\"); {RUN}; (\"",
    "triple quotes": f"'''\n{RUN}\n'''\"\"\"\n{RUN}\n\"\"\"",
    "backslashes": f"\\\n{RUN}\\\\\\x0a{RUN}\\",
    "NUL": f"a\x00\n{RUN}",
    "lone surrogates": f"\ud800\udfff\n{RUN}",
    "BOM": f"\ufeff{RUN}",
    "very long": "x" * 100_000 + f"\n{RUN}",
}


def hostile_graph(text: str) -> GraphDoc:
    """A small network with ``text`` as its name, every label, and a subgraph's name and key."""
    inner = GraphDoc(name=text, nodes=[Node(id="x", type="input", params={"shape": [2]}),
                                       Node(id="act", type="relu", label=text), Node(id="y", type="output")],
                     edges=[Edge(src="x", dst="act"), Edge(src="act", dst="y")])
    return GraphDoc(
        name=text,
        nodes=[Node(id="x", type="input", params={"shape": [4]}, label=text),
               Node(id="fc", type="linear", params={"out_features": 2}, label=text),
               Node(id="sub", type=f"subgraph:{text}", label=text),
               Node(id="y", type="output", label=text)],
        edges=[Edge(src="x", dst="fc"), Edge(src="fc", dst="sub"), Edge(src="sub", dst="y")],
        subgraphs={text: inner},
    )


def run_file(path, cwd) -> subprocess.CompletedProcess:
    """The file run as a user runs it: a fresh interpreter reads its bytes."""
    return subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_reported_utf7_exploit_runs_nothing(tmp_path, capsys):
    doc = GraphDoc(name="x coding: utf-7", nodes=[
        Node(id="x", type="input", params={"shape": [4]}),
        Node(id="fc", type="linear", params={"out_features": 2}, label=f"+AAo-        {RUN}"),
        Node(id="y", type="output")], edges=[Edge(src="x", dst="fc"), Edge(src="fc", dst="y")])
    assert gc.validate(doc) == []
    gc.save(doc, tmp_path / "g.json")
    assert main(["export", str(tmp_path / "g.json"), "--python", str(tmp_path / "net.py")]) == 0
    done = run_file(tmp_path / "net.py", tmp_path)
    assert (done.returncode, done.stdout) == (0, "(2, 2)\n"), done.stderr
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("text", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_no_text_in_a_graph_becomes_code(text):
    doc = hostile_graph(text)
    assert gc.validate(doc) == []
    source = gc.to_python(doc)
    data = source.encode("utf-8")
    assert not data.startswith(b"\xef\xbb\xbf")  # no BOM
    # the first two lines, where Python reads an encoding declaration, hold no text from the graph
    assert all(MARKER not in line for line in source.splitlines()[:2])
    # read as Python reads the bytes, the program is the one the text says, and the payload is a
    # comment or part of a class name (made of letters, digits and _ by graphcore.core.names)
    assert ast.dump(ast.parse(data)) == ast.dump(ast.parse(source))
    for token in tokenize.tokenize(io.BytesIO(data).readline):
        if MARKER in token.string:
            assert token.type == tokenize.COMMENT or (token.type == tokenize.NAME and token.string.isidentifier())


def test_the_check_reads_the_bytes_as_python_does():
    with pytest.raises(gc.GraphError, match="another program"):
        _read_as_written("# coding: utf-7\n# +AAo-x = 1\n")  # the text is comments; the bytes assign x
    assert _read_as_written("# coding: utf-8\nx = 'é'\n") == "# coding: utf-8\nx = 'é'\n"


@pytest.mark.slow  # ~25 interpreters that import torch; test_no_text_in_a_graph_becomes_code reads the bytes as they do
def test_every_hostile_file_runs_in_a_fresh_interpreter_and_runs_nothing_else(tmp_path):
    """Each payload's file run as a user runs it, in its own folder (a few interpreters at a time)."""
    folders = {name: tmp_path / f"payload{i}" for i, name in enumerate(PAYLOADS)}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "net.py").write_bytes(gc.to_python(hostile_graph(PAYLOADS[name])).encode("utf-8"))
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        done = dict(zip(folders, pool.map(lambda folder: run_file(folder / "net.py", folder), folders.values())))
    failed = {name: run.stderr[-500:] for name, run in done.items() if (run.returncode, run.stdout) != (0, "(2, 2)\n")}
    assert failed == {}
    assert [name for name, folder in folders.items() if (folder / MARKER).exists()] == []


@pytest.mark.parametrize("text", ["coding: utf-7", "x coding=latin-1", "CoDiNg: utf-8", "-*- coding:utf-7 -*-",
                                  "vim: set fileencoding=utf-7 :"])
def test_a_comment_never_holds_an_encoding_declaration(text):
    cookie = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.IGNORECASE)
    assert not cookie.match(f"# {comment(text)}")
    assert not cookie.match(f"# {comment(repr(text))}")


@pytest.mark.parametrize("line_break", LINE_BREAKS)
def test_a_comment_is_one_line_in_every_unicode_sense(line_break):
    for text in (f"a{line_break}b", f"a{line_break}b" * 100):
        assert len(f"# {comment(text)}".splitlines()) == 1
        assert len(comment(text).encode("utf-8").splitlines()) == 1


# ----------------------------------------------------------------------------- ids
def three_node_doc(input_id: str, linear_id: str, output_id: str) -> GraphDoc:
    return GraphDoc(name="ids", nodes=[Node(id=input_id, type="input", params={"shape": [4]}),
                                       Node(id=linear_id, type="linear", params={"out_features": 3}),
                                       Node(id=output_id, type="output")],
                    edges=[Edge(src=input_id, dst=linear_id), Edge(src=linear_id, dst=output_id)])


def suggestion(problem) -> str:
    """The id a diagnostic suggests ("rename it, e.g. to type_")."""
    return re.search(r"e\.g\. to (\S+)$", problem.hint).group(1)


def test_every_id_that_validation_suggests_validates():
    for bad in sorted(RESERVED_IDS | set(keyword.kwlist) | set(keyword.softkwlist)):
        problem = check_id(bad)
        if problem is not None and "e.g. to" in (problem.hint or ""):
            assert check_id(suggestion(problem)) is None, bad


def test_ids_with_leading_and_trailing_underscores_export_and_run(tmp_path):
    suggested = suggestion(check_id("type"))
    assert suggested == "type_"
    doc = three_node_doc("_x", suggested, "y_")
    doc.nodes.insert(2, Node(id="x_", type="relu"))
    doc.edges[1:] = [Edge(src=suggested, dst="x_"), Edge(src="x_", dst="y_")]
    assert gc.validate(doc) == []
    source = gc.to_python(doc)
    assert "self.type_ = nn.Linear(4, 3)" in source and "self.x_ = nn.ReLU()" in source
    (tmp_path / "net.py").write_bytes(source.encode("utf-8"))
    done = run_file(tmp_path / "net.py", tmp_path)
    assert (done.returncode, done.stdout) == (0, "(2, 3)\n"), done.stderr


ids = st.one_of(
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z"),
    st.sampled_from(sorted(RESERVED_IDS | set(keyword.kwlist) | set(keyword.softkwlist))).map(lambda s: s + "_"),
    st.sampled_from(sorted(RESERVED_IDS)).map(lambda s: "_" + s.strip("_")),
).filter(lambda s: check_id(s) is None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(ids, min_size=3, max_size=3, unique=True))
def test_any_id_that_validates_exports_and_runs(node_ids):
    doc = three_node_doc(*node_ids)
    assert gc.validate(doc) == []
    compiled = gc.compile(doc).eval()
    namespace = {"__name__": "generated"}
    exec(compile(gc.to_python(doc).encode("utf-8"), "generated.py", "exec"), namespace)  # noqa: S102
    generated = namespace["build_model"]().eval()
    generated.load_state_dict(compiled.state_dict(), strict=True)  # same keys: the ids, unchanged
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(generated(x), compiled(x))


# ----------------------------------------------------------------------------- memory
PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import graphcore as gc
    from graphcore.core.document import Edge, GraphDoc, Node
    doc = GraphDoc(name="wide", nodes=[Node(id="x", type="input", params={"shape": [16, 8, 8]}),
                                       Node(id="conv", type="conv2d", params={"out_channels": 10**6}),
                                       Node(id="pool", type="global_avgpool"), Node(id="y", type="output")],
                   edges=[Edge(src="x", dst="conv"), Edge(src="conv", dst="pool"), Edge(src="pool", dst="y")])
    assert gc.validate(doc) == []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    source = gc.to_python(doc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after, "ok": "nn.Conv2d(16, 1000000, 3)" in source}))
""")


def test_python_export_builds_no_weights():
    """A conv with 10**6 filters has 144 M weights (576 MB): writing its code must not allocate them."""
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout)
    assert peak["ok"]
    assert peak["after_kib"] - peak["before_kib"] < 100 * 1024, peak  # ru_maxrss is in KiB on Linux


# ----------------------------------------------------------------------------- the editor's ONNX export
async def test_the_editors_onnx_export_leaves_no_folder_and_writes_only_its_own(user, tmp_path, monkeypatch):
    from app.editor import EDITORS

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    victim = tmp_path / "victim.onnx"  # a graph named after a path must not write there
    victim.write_bytes(b"precious")
    await user.open("/")
    await user.should_see(marker="canvas", retries=30)
    EDITORS[user.client.id].load(three_node_doc("x", "fc", "y").model_copy(update={"name": str(tmp_path / "victim")}))
    user.find("export-onnx").click()
    await user.should_see(marker="export-go")  # the dialog asks which weights: fresh ones by default
    user.find("export-go").click()
    await user.should_see("Checked: onnxruntime matches PyTorch", retries=600)
    for _ in range(50):  # the download starts with the check's message
        if user.download.http_responses:
            break
        await asyncio.sleep(0.1)
    download = user.download.http_responses[-1]
    assert [i.name for i in onnx.load_model_from_string(download.content).graph.input] == ["x"]
    assert victim.read_bytes() == b"precious"
    assert list(scratch.iterdir()) == []
    user.find("export-download-onnx").click()  # the dialog's button serves the same file, from memory
    assert (await user.download.next(timeout=10)).content == download.content
