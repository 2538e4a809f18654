"""Small graphs and helpers for the training, diffusion, inference and job tests."""

from __future__ import annotations

import pytest
import torch

from graphcore.core.document import Edge, GraphDoc, Node


def _doc(name: str, nodes: list[tuple], edges: list[tuple]) -> GraphDoc:
    return GraphDoc(
        name=name,
        nodes=[Node(id=i, type=t, params=p) for i, t, p in nodes],
        edges=[Edge(src=s, dst=d, dst_port=port) for s, d, port in edges],
    )


def tiny_denoiser(channels: int = 1, size: int = 8, width: int = 16, video_frames: int | None = None) -> GraphDoc:
    """A two-input noise predictor built from primitive blocks: conv stack plus an embedded timestep.

    ``video_frames`` makes it a (C, T, H, W) video denoiser with conv3d blocks."""
    conv = "conv3d" if video_frames else "conv2d"
    shape = [channels, video_frames, size, size] if video_frames else [channels, size, size]
    ones = [1, 1, 1] if video_frames else [1, 1]
    nodes = [
        ("x", "input", {"shape": shape}),
        ("t", "input", {"shape": [], "dtype": "int64"}),
        ("temb", "embedding", {"num_embeddings": 1000, "embedding_dim": width}),
        ("tproj", "linear", {"out_features": width}),
        ("tshape", "reshape", {"shape": [width, *ones]}),
        ("c1", conv, {"out_channels": width, "kernel_size": 3, "padding": 1}),
        ("mix", "add", {"n": 2}),
        ("a1", "silu", {}),
        ("c2", conv, {"out_channels": width, "kernel_size": 3, "padding": 1}),
        ("a2", "silu", {}),
        ("c3", conv, {"out_channels": channels, "kernel_size": 3, "padding": 1}),
        ("eps", "output", {}),
    ]
    edges = [("t", "temb", "in"), ("temb", "tproj", "in"), ("tproj", "tshape", "in"), ("x", "c1", "in"),
             ("c1", "mix", "in0"), ("tshape", "mix", "in1"), ("mix", "a1", "in"), ("a1", "c2", "in"),
             ("c2", "a2", "in"), ("a2", "c3", "in"), ("c3", "eps", "in")]
    return _doc("tiny_video_denoiser" if video_frames else "tiny_denoiser", nodes, edges)


def tiny_classifier(size: int = 8, classes: int = 10) -> GraphDoc:
    nodes = [("x", "input", {"shape": [1, size, size]}), ("c1", "conv2d", {"out_channels": 8, "kernel_size": 3}),
             ("a1", "relu", {}), ("flat", "flatten", {}), ("fc", "linear", {"out_features": classes}),
             ("logits", "output", {})]
    edges = [("x", "c1", "in"), ("c1", "a1", "in"), ("a1", "flat", "in"), ("flat", "fc", "in"),
             ("fc", "logits", "in")]
    return _doc("tiny_classifier", nodes, edges)


def tiny_autoencoder(size: int = 8) -> GraphDoc:
    nodes = [("x", "input", {"shape": [1, size, size]}), ("flat", "flatten", {}),
             ("enc", "linear", {"out_features": 16}), ("a1", "relu", {}),
             ("dec", "linear", {"out_features": size * size}), ("a2", "sigmoid", {}),
             ("img", "reshape", {"shape": [1, size, size]}), ("y", "output", {})]
    edges = [("x", "flat", "in"), ("flat", "enc", "in"), ("enc", "a1", "in"), ("a1", "dec", "in"),
             ("dec", "a2", "in"), ("a2", "img", "in"), ("img", "y", "in")]
    return _doc("tiny_autoencoder", nodes, edges)


@pytest.fixture
def one_thread():
    """The test machine's cores are shared: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
