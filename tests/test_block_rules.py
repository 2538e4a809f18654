"""Every registered block: its shape rule equals what its real module produces.

The tests loop over the registry, so a new block type is covered as soon as it is
registered with its examples.
"""

import pytest
import torch
from block_strategies import (
    block_call,
    example_params,
    outputs_of,
    params_near,
    run_on_meta,
    shape_near,
    single_block_doc,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import blocks
from graphcore.core.analysis import Analysis

ALL = blocks.all_specs()
BUILT = [s for s in ALL if s.build is not None]


def by_type(spec):
    return spec.type


@pytest.mark.parametrize("spec", ALL, ids=by_type)
def test_block_is_fully_declared(spec):
    assert spec.examples, f"{spec.type} needs at least one Example"
    assert spec.doc and spec.category
    for name, field in spec.params.model_fields.items():
        assert field.description or field.annotation is not None, f"{spec.type}.{name} has no description"
        assert not field.is_required(), f"{spec.type}.{name} needs a default so a dropped block is valid"


@pytest.mark.parametrize("spec", BUILT, ids=by_type)
def test_examples_match_the_real_module(spec):
    for example in spec.examples:
        params = example_params(spec, example)
        assert spec.infer(params, example.inputs) == run_on_meta(spec, params, example.inputs)


@pytest.mark.parametrize("spec", BUILT, ids=by_type)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rule_matches_module_or_reports_a_problem(spec, data):
    example = data.draw(st.sampled_from(spec.examples))
    raw = data.draw(params_near(spec.params, example.params))
    try:
        params = spec.params.model_validate(raw)
    except ValidationError:
        params = None
    ports = spec.input_ports(params if params is not None else example_params(spec, example))
    fallback = next(iter(example.inputs.values()))
    inputs = {p.name: data.draw(shape_near(example.inputs.get(p.name, fallback)))
              for p in ports if p.name in example.inputs or not p.optional}

    analysis = Analysis(single_block_doc(spec, raw, inputs, ports))

    internal = [d for d in analysis.diagnostics if "internal error" in d.message]
    assert not internal, internal
    node = analysis.nodes["block"]
    if params is None:
        assert node.problems, "invalid params must give a diagnostic"
    if analysis.ok:
        assert node.outputs == run_on_meta(spec, params, inputs)
    else:
        assert all(d.node_id is not None or d.severity == "warning" for d in analysis.diagnostics)


def test_registering_a_type_twice_fails():
    spec = blocks.get("relu")
    with pytest.raises(ValueError, match="already registered"):
        blocks.register(spec)


@pytest.mark.parametrize("spec", BUILT, ids=by_type)
def test_forward_and_backward_on_a_tiny_real_input(spec):
    example = spec.examples[0]
    params = example_params(spec, example)
    module = spec.build(params, example.inputs)
    leaves = []

    def make(port, shape):
        if port.dtype == "int":
            return torch.randint(0, 2, (2, *shape))
        if port.batch_only:  # nothing but its batch size is read, so it gets no gradient
            return torch.randn((2, *shape))
        leaves.append(torch.randn((2, *shape), requires_grad=True))
        return leaves[-1]

    args, kwargs = block_call(spec, params, example.inputs, make)
    outs = outputs_of(spec, params, module(*args, **kwargs))
    sum(o.float().square().mean() for o in outs).backward()
    grads = [t.grad for t in leaves] + [p.grad for p in module.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), f"{spec.type}: missing or bad gradients"
