"""The batching Inferencer: same answers as the model, concurrent clients, errors to the right
caller only, clients in other processes, weight updates, and a worker that ends with its owner.

The tests share one worker; those that need a worker (or a client process) of their own are slow
tests, since starting a Python process that imports torch takes seconds."""

from __future__ import annotations

import copy
import gc as garbage
import io
import multiprocessing as mp
import os
import pickle
import threading
import time

import pytest
import torch
from train_graphs import tiny_classifier, tiny_denoiser

import graphcore as gc
from graphcore.runtime.config import GraphIO
from graphcore.runtime.serving import InferenceError, Inferencer, InferencerClosed, _InferringClients, _Worker


@pytest.fixture(scope="module")
def model():
    return gc.compile(tiny_classifier()).init(seed=0).eval()


@pytest.fixture(scope="module")
def omp_wait_policy():
    """OMP_WAIT_POLICY as it was before the shared worker started."""
    return os.environ.get("OMP_WAIT_POLICY")


@pytest.fixture(scope="module")
def inferencer(model, omp_wait_policy):
    with Inferencer(model, device="cpu", max_batch=16, threads=1) as served:
        yield served


def expected(model, x):
    with torch.no_grad():
        return model(x)


def test_answers_like_the_model(model, inferencer):
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(inferencer(x), expected(model, x), atol=1e-5)
    assert torch.allclose(inferencer(x[0]), expected(model, x[:1])[0], atol=1e-5)  # one sample, no batch dim
    ids = [inferencer.infer_async(x[i]) for i in range(5)]
    replies = torch.stack([inferencer.wait_for_resp(rid) for rid in reversed(ids)][::-1])
    assert torch.allclose(replies, expected(model, x), atol=1e-5)


def test_concurrent_clients_get_their_own_replies(model, inferencer):
    inputs = torch.randn(8, 25, 1, 8, 8)  # 8 threads, 25 distinct requests each
    want = expected(model, inputs.flatten(0, 1)).view(8, 25, 10)
    got: dict[int, list] = {}

    def client_thread(k: int) -> None:
        client = inferencer.create_client() if k % 2 else inferencer  # own clients and a shared one
        ids = [client.infer_async(inputs[k, i]) for i in range(25)]
        got[k] = [client.wait_for_resp(rid, timeout=60) for rid in ids]

    threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(8))
    for k in range(8):
        assert torch.allclose(torch.stack(got[k]), want[k], atol=1e-5), f"thread {k} got someone else's replies"
    stats = inferencer.stats()
    assert 1 < stats["max_batch"] <= 16  # requests waiting together were batched, never past max_batch


def test_a_bad_request_fails_alone(model, inferencer):
    good = torch.randn(3, 1, 8, 8)
    ids = [inferencer.infer_async(good[0]), inferencer.infer_async(torch.randn(2, 8, 8)),
           inferencer.infer_async(good[1:]), inferencer.infer_async(torch.zeros(1, 8, 8, dtype=torch.long))]
    assert torch.allclose(inferencer.wait_for_resp(ids[0]), expected(model, good[:1])[0], atol=1e-5)
    with pytest.raises(InferenceError, match=r"input 'x' takes one sample \[1, 8, 8\]"):
        inferencer.wait_for_resp(ids[1])
    assert torch.allclose(inferencer.wait_for_resp(ids[2]), expected(model, good[1:]), atol=1e-5)
    with pytest.raises(InferenceError, match="float32 values"):
        inferencer.wait_for_resp(ids[3])
    with pytest.raises(InferenceError, match="takes 1 input"):
        inferencer(good, good)


@pytest.mark.slow
def test_an_error_inside_the_model_reaches_only_its_caller():
    doc = tiny_denoiser()
    doc.node("temb").params["num_embeddings"] = 10
    model = gc.compile(doc).init(seed=0).eval()
    with Inferencer(model, max_batch=8) as served:
        x = torch.randn(1, 8, 8)
        ok = served.infer_async(x, torch.tensor(3))
        bad = served.infer_async(x, torch.tensor(500))  # past the embedding table
        also_ok = served.infer_async(x, torch.tensor(4))
        with torch.no_grad():
            assert torch.allclose(served.wait_for_resp(ok), model(x[None], torch.tensor([3]))[0], atol=1e-5)
            with pytest.raises(InferenceError, match="IndexError"):
                served.wait_for_resp(bad)
            assert torch.allclose(served.wait_for_resp(also_ok), model(x[None], torch.tensor([4]))[0], atol=1e-5)


def test_update_params(model, inferencer):
    other = gc.compile(tiny_classifier()).init(seed=1).eval()
    x = torch.randn(4, 1, 8, 8)
    inferencer.update_params(other.state_dict())
    assert torch.allclose(inferencer(x), expected(other, x), atol=1e-5)
    with pytest.raises(InferenceError, match="do not fit"):
        inferencer.update_params({"nope": torch.zeros(1)})
    inferencer.update_params(model.state_dict())
    assert torch.allclose(inferencer(x), expected(model, x), atol=1e-5)


def _remote(client, x, replies) -> None:
    replies.put(client(x).numpy())  # numpy: a tensor would go by shared memory that dies with this process


@pytest.mark.slow
def test_a_client_works_from_another_process(model, inferencer):
    ctx = mp.get_context("spawn")
    replies = ctx.Queue()
    x = torch.randn(3, 1, 8, 8)
    process = ctx.Process(target=_remote, args=(inferencer.create_client(), x, replies))
    process.start()
    got = replies.get(timeout=120)
    process.join(60)
    assert process.exitcode == 0 and torch.allclose(torch.from_numpy(got), expected(model, x), atol=1e-5)


@pytest.mark.slow
def test_the_worker_stops_when_the_inferencer_goes_away(model):
    served = Inferencer(model, max_batch=4)
    process, client = served._process, served.create_client()
    assert client(torch.randn(1, 8, 8)).shape == (10,)
    del served
    garbage.collect()
    process.join(30)
    assert not process.is_alive()
    client.close()
    with pytest.raises(InferencerClosed):
        client(torch.randn(1, 8, 8))


@pytest.mark.slow
def test_a_graph_that_cannot_be_served_is_a_clear_error():
    doc = tiny_classifier()
    doc.node("fc").params["out_features"] = -1
    with pytest.raises(gc.GraphError, match="could not start"):
        Inferencer(doc)


@pytest.mark.slow
def test_two_instances_run_batches_at_once_and_answer_like_the_model_before_and_after_an_update():
    model = gc.compile(gc.template("alphazero_connect4")).init(seed=0).eval()  # ~10 ms a batch of 16 here
    other = gc.compile(gc.template("alphazero_connect4")).init(seed=1).eval()
    x = torch.randn(8, 16, 3, 6, 7)  # 8 requests of 16 samples: 8 batches
    with Inferencer(model, max_batch=16, instances=2) as served:
        before = [served.infer_async(x[i]) for i in range(4)]
        served.update_params(other.state_dict())  # the requests sent before it still see the old weights
        after = [served.infer_async(x[i]) for i in range(4, 8)]
        got = [served.wait_for_resp(rid, timeout=60) for rid in before + after]
        stats = served.stats()
    for i, (logits, value) in enumerate(got):
        want_logits, want_value = expected(model if i < 4 else other, x[i])
        assert torch.allclose(logits, want_logits, atol=1e-4) and torch.allclose(value, want_value, atol=1e-4), i
    assert stats["instances"] == 2 and stats["most_in_flight"] == 2 and stats["batches"] == 8


def test_an_update_waits_for_the_batches_in_flight_on_other_instances():
    """In the worker itself, one group of requests as the server reads them: four batches, new
    weights, four more. The update must not reach the weights while an instance still runs a batch."""
    model = gc.compile(gc.template("alphazero_connect4")).init(seed=0).eval()
    other = gc.compile(gc.template("alphazero_connect4")).init(seed=1).eval()
    x = torch.randn(8, 16, 3, 6, 7)
    weights = io.BytesIO()
    torch.save(other.state_dict(), weights)
    server_end, client_end = mp.Pipe()
    worker = _Worker(copy.deepcopy(model), torch.device("cpu"), 16, GraphIO.of(model.doc).inputs, instances=2)
    items = [(server_end, "infer", i, (x[i].numpy(),)) for i in range(4)]
    items += [(server_end, "update", "update", weights.getvalue())]
    items += [(server_end, "infer", i, (x[i].numpy(),)) for i in range(4, 8)]
    with torch.inference_mode():
        assert worker.handle(items)
    worker.close()
    replies = {}
    while client_end.poll(0):
        rid, ok, value = pickle.loads(client_end.recv_bytes())
        replies[rid] = value
        assert ok, value
    assert sorted(replies, key=str) == [0, 1, 2, 3, 4, 5, 6, 7, "update"]
    for i in range(8):
        want_logits, want_value = expected(model if i < 4 else other, x[i])
        logits, value = (torch.from_numpy(a) for a in replies[i])
        assert torch.allclose(logits, want_logits, atol=1e-4) and torch.allclose(value, want_value, atol=1e-4), i


def test_a_batch_waits_only_for_clients_that_asked_for_an_inference_lately():
    clients = _InferringClients(window=1.0)
    trainer, worker_a, worker_b = object(), object(), object()  # the trainer only pings and sends weights
    assert clients.count(now=100.0) == 0
    clients.saw(worker_a, 100.0)
    clients.saw(worker_b, 100.5)
    assert clients.count(now=100.9) == 2
    assert clients.count(now=101.2) == 1  # worker_a has been quiet for over the window
    clients.saw(worker_a, 101.3)
    clients.forget(worker_b)  # its connection closed
    assert clients.count(now=101.4) == 1
    clients.forget(trainer)  # never asked: forgetting it is harmless
    assert clients.count(now=103.0) == 0


def test_timeout_on_wait(inferencer):
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        inferencer.wait_for_resp("never-sent", timeout=0.2)
    assert time.monotonic() - start < 30


def test_worker_threads_are_set_and_checked(model, inferencer, omp_wait_policy):
    with pytest.raises(gc.GraphError, match="threads"):
        Inferencer(model, threads=0)
    with pytest.raises(gc.GraphError, match="instances must be at least 1"):
        Inferencer(model, instances=0)
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(inferencer(x), expected(model, x), atol=1e-5)
    stats = inferencer.stats()
    assert stats["threads"] == 1 and stats["instances"] == 1 and stats["most_in_flight"] == 1
    assert stats["openmp_wait_policy"] == (omp_wait_policy or "PASSIVE")  # no spinning next to the clients
    assert os.environ.get("OMP_WAIT_POLICY") == omp_wait_policy  # set for the worker's start only


def test_numpy_arrays_and_lists_are_accepted_like_tensors(model, inferencer):
    x = torch.randn(2, 1, 8, 8)
    want = expected(model, x)
    assert torch.allclose(inferencer(x.numpy()), want, atol=1e-5)
    assert torch.allclose(inferencer(x[0].tolist()), want[0], atol=1e-5)  # float64 values, one sample
