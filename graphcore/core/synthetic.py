"""Generated graphs of any size, for benchmarks and tests of the editor's speed."""

from __future__ import annotations

from graphcore.core.document import Edge, GraphDoc, Node


def residual_tower(num_blocks: int, channels: int = 16, size: int = 32) -> GraphDoc:
    """A ResNet-like graph of primitive blocks: a stem, ``num_blocks`` residual blocks of
    7 nodes each (conv, bn, relu, conv, bn, add, relu), then a pooled linear head.
    ``7 * num_blocks + 7`` nodes in all."""
    nodes = [
        Node(id="x", type="input", params={"shape": [3, size, size]}),
        Node(id="stem", type="conv2d", params={"out_channels": channels, "kernel_size": 3, "padding": 1}),
        Node(id="stem_bn", type="batchnorm2d"),
        Node(id="stem_act", type="relu"),
    ]
    edges = [Edge(src="x", dst="stem"), Edge(src="stem", dst="stem_bn"), Edge(src="stem_bn", dst="stem_act")]
    last = "stem_act"
    for i in range(num_blocks):
        ids = [f"b{i}_{part}" for part in ("conv1", "bn1", "act1", "conv2", "bn2", "add", "act2")]
        conv = {"out_channels": channels, "kernel_size": 3, "padding": 1, "bias": False}
        nodes += [
            Node(id=ids[0], type="conv2d", params=dict(conv)), Node(id=ids[1], type="batchnorm2d"),
            Node(id=ids[2], type="relu"), Node(id=ids[3], type="conv2d", params=dict(conv)),
            Node(id=ids[4], type="batchnorm2d"), Node(id=ids[5], type="add"), Node(id=ids[6], type="relu"),
        ]
        edges += [Edge(src=last, dst=ids[0])] + [Edge(src=a, dst=b) for a, b in zip(ids[:4], ids[1:5])]
        edges += [Edge(src=ids[4], dst=ids[5], dst_port="in0"), Edge(src=last, dst=ids[5], dst_port="in1"),
                  Edge(src=ids[5], dst=ids[6])]
        last = ids[6]
    nodes += [Node(id="pool", type="global_avgpool"), Node(id="head", type="linear", params={"out_features": 10}),
              Node(id="logits", type="output")]
    edges += [Edge(src=last, dst="pool"), Edge(src="pool", dst="head"), Edge(src="head", dst="logits")]
    return GraphDoc(name=f"residual_tower_{num_blocks}", nodes=nodes, edges=edges)


def nested_subgraphs(depth: int, uses: int = 2, features: int = 8) -> GraphDoc:
    """Subgraph ``level{k}`` chains ``uses`` nodes of type ``level{k-1}``; ``level0`` is one linear
    layer; the graph uses ``level{depth}`` once. With 2 uses each level doubles the expanded graph
    (``2**depth`` linears: the pattern that once made the analysis exponential); with 1, it is a
    plain chain of ``depth`` levels."""

    def level(name: str, inner: list[Node]) -> GraphDoc:
        ids = ["x", *(n.id for n in inner), "y"]
        nodes = [Node(id="x", type="input", params={"shape": [features]}), *inner, Node(id="y", type="output")]
        return GraphDoc(name=name, nodes=nodes, edges=[Edge(src=a, dst=b) for a, b in zip(ids, ids[1:])])

    subgraphs = {"level0": level("level0", [Node(id="fc", type="linear", params={"out_features": features})])}
    for k in range(1, depth + 1):
        subgraphs[f"level{k}"] = level(f"level{k}", [Node(id=f"use{i}", type=f"subgraph:level{k - 1}")
                                                     for i in range(uses)])
    top = level(f"nested_{uses}x{depth}", [Node(id="top", type=f"subgraph:level{depth}")])
    return top.model_copy(update={"subgraphs": subgraphs})
