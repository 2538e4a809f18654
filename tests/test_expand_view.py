"""What the canvas draws of a level: subgraph nodes expanded in place (inner blocks with the shapes of
that instance, edges routed to them, the others moved aside) and chains of one subgraph stacked."""

from graphcore.core.document import Edge, GraphDoc, Node
from graphcore.editing import expand
from graphcore.editing.expand import BLOCK, PAD, Projection, ViewState, diff, document_path, expand_all, project, toggle
from graphcore.editing.session import Delta, EditSession


def residual(name: str = "blk", width: int = 8) -> GraphDoc:
    """x -> linear -> relu -> add(relu, x) -> y."""
    nodes = [Node(id="x", type="input", params={"shape": [width]}), Node(id="lin", type="linear",
             params={"out_features": width}), Node(id="act", type="relu"), Node(id="add", type="add"),
             Node(id="y", type="output")]
    edges = [Edge(src="x", dst="lin"), Edge(src="lin", dst="act"), Edge(src="act", dst="add", dst_port="in0"),
             Edge(src="x", dst="add", dst_port="in1"), Edge(src="add", dst="y")]
    positions = {"x": [0, 0], "lin": [300, 0], "act": [600, 0], "add": [900, 0], "y": [1200, 0]}
    return GraphDoc(name=name, nodes=nodes, edges=edges, ui={"positions": positions})


def chain(types: list[tuple[str, str, dict]], width: int = 8, **subgraphs: GraphDoc) -> EditSession:
    """input -> the given (id, type, params) nodes in a row -> output, placed 300 apart."""
    nodes = [Node(id="x", type="input", params={"shape": [width]}),
             *(Node(id=i, type=t, params=p) for i, t, p in types), Node(id="out", type="output")]
    ids = [n.id for n in nodes]
    doc = GraphDoc(name="g", nodes=nodes, edges=[Edge(src=a, dst=b) for a, b in zip(ids, ids[1:])],
                   subgraphs=subgraphs, ui={"positions": {nid: [300 * i, 0] for i, nid in enumerate(ids)}})
    return EditSession(doc)


def three_blocks() -> EditSession:
    return chain([("a", "subgraph:blk", {}), ("b", "subgraph:blk", {}), ("c", "subgraph:blk", {}),
                  ("head", "linear", {"out_features": 4})], blk=residual())


def edges(projection: Projection) -> set[tuple[str, str, str, str]]:
    return {(e["source"], e["sourceHandle"], e["target"], e["targetHandle"]) for e in projection.edges.values()}


def test_a_chain_of_one_subgraph_draws_as_one_block_with_a_badge():
    shown = project(three_blocks(), ViewState())
    assert [v["id"] for v in shown.nodes.values()] == ["x", "a", "head", "out"]
    stack = shown.nodes["a"]
    assert stack["stack"] == 3 and stack["label"] == "a … c" and stack["shapes"] == {"out": "(N, 8)"}
    assert edges(shown) == {("x", "out", "a", "in"), ("a", "out", "head", "in"), ("head", "out", "out", "in")}
    assert shown.stacks == {"a": ["a", "b", "c"]}
    assert [t["op"] for t in stack["toggles"]] == ["expand"]


def test_an_unstacked_chain_shows_its_blocks_each_able_to_stack_again():
    session = three_blocks()
    state = toggle(ViewState(), project(session, ViewState()), "expand", "a")
    assert state.unstacked == {"a"}
    shown = project(session, state)
    assert [v["id"] for v in shown.nodes.values()] == ["x", "a", "b", "c", "head", "out"]
    assert ("b", "out", "c", "in") in edges(shown)
    assert all({"expand", "collapse"} == {t["op"] for t in shown.nodes[m]["toggles"]} for m in "abc")
    assert toggle(state, shown, "collapse", "b") == ViewState()


def test_an_expanded_instance_draws_its_blocks_in_a_frame_with_the_edges_routed_to_them():
    session = three_blocks()
    shown = project(session, ViewState(expanded=frozenset({"a"})), stacks=False)
    frame = shown.nodes["a/"]
    assert frame["kind"] == "frame" and "a" not in shown.nodes
    inner = [vid for vid, v in shown.nodes.items() if v.get("parent") == "a/"]
    assert inner == ["a/lin", "a/act", "a/add"]  # after the frame: a parent comes before its children
    assert list(shown.nodes).index("a/") < list(shown.nodes).index("a/lin")
    assert all(shown.nodes[vid]["inner"] and shown.nodes[vid]["toggles"] == [] for vid in inner)
    assert {("x", "out", "a/lin", "in"), ("x", "out", "a/add", "in1"), ("a/add", "out", "b", "in"),
            ("a/lin", "out", "a/act", "in"), ("a/act", "out", "a/add", "in0")} <= edges(shown)
    assert not any("a" in (e["source"], e["target"]) for e in shown.edges.values())
    # Inner places are relative to the frame, which holds them all.
    assert shown.nodes["a/lin"]["position"][0] >= 0 and frame["width"] == 600 + BLOCK[0] + 2 * PAD


def test_nodes_right_of_a_frame_move_aside_and_a_drag_goes_back_to_document_positions():
    session = three_blocks()
    shown = project(session, ViewState(expanded=frozenset({"a"})), stacks=False)
    dx = shown.nodes["a/"]["width"] - BLOCK[0]
    assert shown.nodes["b"]["position"] == [600 + dx, 0]
    assert shown.nodes["x"]["position"] == [0, 0] and shown.nodes["a/"]["position"] == [300, 0]
    moved = shown.document_positions({"b": [700 + dx, 50], "a/": [310, 0], "a/lin": [0, 0]})
    assert moved == {"b": (700, 50), "a": (310, 0)}


def test_inner_shapes_are_those_of_the_instance():
    relu = GraphDoc(name="act", nodes=[Node(id="x", type="input", params={"shape": [8]}), Node(id="r", type="relu"),
                                       Node(id="y", type="output")],
                    edges=[Edge(src="x", dst="r"), Edge(src="r", dst="y")])
    session = chain([("p", "subgraph:act", {}), ("wide", "linear", {"out_features": 16}), ("q", "subgraph:act", {})],
                    act=relu)
    shown = project(session, ViewState(expanded=frozenset({"p", "q"})))
    assert shown.nodes["p/r"]["shapes"] == {"out": "(N, 8)"}
    assert shown.nodes["q/r"]["shapes"] == {"out": "(N, 16)"}
    assert ("q/r", "out", "out", "in") in edges(shown)


def test_a_repeated_subgraph_expands_to_its_copies_wired_in_a_row():
    session = chain([("r", "subgraph:blk", {"repeat": 2})], blk=residual())
    shown = project(session, ViewState(expanded=frozenset({"r"})))
    assert shown.nodes["r/"]["copies"] == 2
    assert {"r/1/lin", "r/2/lin"} <= set(shown.nodes)
    assert shown.nodes["r/2/lin"]["position"][0] > shown.nodes["r/1/add"]["position"][0]
    assert {("x", "out", "r/1/lin", "in"), ("r/1/add", "out", "r/2/lin", "in"), ("r/1/add", "out", "r/2/add", "in1"),
            ("r/2/add", "out", "out", "in")} <= edges(shown)


def nested() -> EditSession:
    pair = GraphDoc(name="pair", nodes=[Node(id="x", type="input", params={"shape": [8]}),
                                        Node(id="one", type="subgraph:blk"), Node(id="two", type="subgraph:blk"),
                                        Node(id="y", type="output")],
                    edges=[Edge(src="x", dst="one"), Edge(src="one", dst="two"), Edge(src="two", dst="y")],
                    ui={"positions": {"x": [0, 0], "one": [300, 0], "two": [600, 0], "y": [900, 0]}})
    return chain([("p", "subgraph:pair", {}), ("head", "linear", {"out_features": 4})], blk=residual(), pair=pair)


def test_expand_all_opens_every_level_to_the_depth_asked_and_collapse_closes_a_frame():
    session = nested()
    assert expand_all(session, 1) == ViewState(expanded=frozenset({"p"}))
    deep = expand_all(session, 2)
    assert deep == ViewState(expanded=frozenset({"p", "p/one", "p/two"}), unstacked=frozenset({"p/one"}))
    shown = project(session, deep)
    assert shown.nodes["p/one/"]["parent"] == "p/" and shown.nodes["p/one/lin"]["parent"] == "p/one/"
    assert ("p/one/add", "out", "p/two/lin", "in") in edges(shown)
    assert ("p/two/add", "out", "head", "in") in edges(shown)
    outer = shown.nodes["p/"]
    assert outer["width"] > shown.nodes["p/one/"]["width"] + shown.nodes["p/two/"]["width"]
    assert toggle(deep, shown, "collapse", "p/").expanded == {"p/one", "p/two"}


def test_the_diff_between_two_projections_is_what_the_canvas_changes():
    session = three_blocks()
    collapsed = project(session, ViewState(), stacks=False)
    opened = project(session, ViewState(expanded=frozenset({"a"})), stacks=False)
    delta = diff(collapsed, opened)
    assert delta.removed == ["a"]
    assert list(delta.nodes)[:2] == ["a/", "a/lin"]
    assert "x.out->a.in" in delta.edges_removed and any(e["target"] == "a/lin" for e in delta.edges_added)
    assert delta.positions["b"][0] > 600
    back = diff(opened, collapsed)
    assert set(back.removed) == {"a/", "a/lin", "a/act", "a/add"} and "a" in back.nodes
    assert diff(opened, opened).empty


def test_view_state_round_trips_and_reads_anything_else_as_empty():
    state = ViewState(expanded=frozenset({"p", "p/one"}), unstacked=frozenset({"a"}))
    assert ViewState.from_dict(state.to_dict()) == state
    assert ViewState.from_dict(None) == ViewState()
    assert ViewState.from_dict({"expanded": "p", "unstacked": [1, "a"]}) == ViewState(unstacked=frozenset({"a"}))


def test_a_view_id_names_the_nodes_to_open():
    assert document_path("p/2/one/") == ["p", "one"]
    assert document_path("head") == ["head"]


def test_an_edit_upstream_redraws_the_inner_shapes_of_an_expanded_instance():
    relu = GraphDoc(name="act", nodes=[Node(id="x", type="input", params={"shape": [8]}), Node(id="r", type="relu"),
                                       Node(id="y", type="output")],
                    edges=[Edge(src="x", dst="r"), Edge(src="r", dst="y")])
    session = chain([("p", "subgraph:act", {})], act=relu)
    state = ViewState(expanded=frozenset({"p"}))
    before = project(session, state)
    session.set_params("x", {"shape": [12]})
    delta = diff(before, project(session, state))
    assert delta.nodes["p/r"] == {"id": "p/r", "shapes": {"out": "(N, 12)"}, "problems": []}  # a patch: same face
    assert not delta.removed and not delta.edges_added


def test_drawn_ids_name_the_document_nodes_they_stand_for():
    session = three_blocks()
    stacked = project(session, ViewState())
    assert stacked.document_ids(["a", "head"]) == ["a", "b", "c", "head"]
    opened = project(session, ViewState(expanded=frozenset({"a"}), unstacked=frozenset({"a"})))
    assert opened.document_ids(["a/", "a/lin", "b"]) == ["a", "b"]


def test_drawn_edges_name_the_document_edges_they_stand_for():
    session = three_blocks()
    opened = project(session, ViewState(expanded=frozenset({"a"})), stacks=False)
    # x feeds the module's input port, which the frame draws into two inner blocks: either is that edge
    assert opened.document_edges(["x.out->a/lin.in"]) == ["x.out->a.in"]
    assert opened.document_edges(["x.out->a/add.in1", "x.out->a/lin.in"]) == ["x.out->a.in"]
    assert opened.document_edges(["a/add.out->b.in", "b.out->c.in"]) == ["a.out->b.in", "b.out->c.in"]
    assert opened.document_edges(["a/lin.out->a/act.in"]) == []  # inside the frame: read-only here
    delta = session.remove(edge_ids=opened.document_edges(["x.out->a/add.in1"]))
    assert delta.edges_removed == ["x.out->a.in"] and not any(e.dst == "a" for e in session.doc.edges)


def one_module_among_blocks() -> EditSession:
    """A level of plain blocks with one collapsed subgraph node among them: drawn as itself."""
    return chain([("l1", "linear", {"out_features": 8}), ("m", "subgraph:blk", {}),
                  ("l2", "linear", {"out_features": 8}), ("head", "linear", {"out_features": 4})], blk=residual())


def test_an_edit_on_a_plain_level_follows_the_drawing_in_time_with_what_it_changed():
    session = one_module_among_blocks()
    drawn = project(session, ViewState())
    assert drawn.plain
    for edit in (lambda: session.set_params("x", {"shape": [6]}),  # every shape after it
                 lambda: session.set_params("head", {"out_features": 3}),  # one block's params
                 lambda: session.move("l2", 40, 500),
                 session.undo):
        before = project(session, ViewState())
        change = expand.follow(drawn, edit())
        assert change is not None
        fresh = project(session, ViewState())
        assert drawn.nodes == fresh.nodes  # kept up to date
        assert change.to_dict() == diff(before, fresh).to_dict()  # what project and diff would send


def test_an_edit_that_may_draw_the_level_otherwise_is_left_to_project_and_diff():
    session = one_module_among_blocks()
    drawn = project(session, ViewState())
    assert expand.follow(drawn, session.set_params("m", {"repeat": 2})) is None  # a subgraph node's params
    assert expand.follow(drawn, session.connect("l1", "out", "l2", "in")) is None  # an edge
    assert expand.follow(drawn, session.add_node("relu")) is None  # a block
    assert expand.follow(drawn, Delta()) is None  # a view state changed: nothing in the document
    assert not project(three_blocks(), ViewState()).plain  # a stack
    session = three_blocks()
    assert not project(session, toggle(ViewState(), project(session, ViewState()), "expand", "a")).plain
