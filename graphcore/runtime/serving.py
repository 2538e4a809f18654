"""A model served by a worker process with dynamic batching.

    inferencer = Inferencer(model, device="cpu", max_batch=32)
    y = inferencer(x)                  # like model(x); x is one sample or a batch
    client = inferencer.create_client()  # picklable: hand it to other processes or threads
    rid = client.infer_async(x); ...; y = client.wait_for_resp(rid)
    inferencer.update_params(new_model.state_dict())

The worker gathers the requests waiting at that moment (and those arriving within half a
forward pass, unless every client that asked for an inference in the last second has sent one)
into one forward pass of up to ``max_batch`` samples, so many small concurrent callers share the
cost of one batch. With ``instances=2`` two batches run at once, on two threads: while one is in
flight the next gathers and starts. Requests travel over a local socket
(``multiprocessing.connection``, authenticated with a random key) as pickles of numpy arrays,
which the worker joins and splits in numpy; the model travels as its graph JSON and state_dict,
never as a pickled module. A request that fails (wrong shape, an error in the model) gets its
error back as ``InferenceError``; the requests batched with it are answered normally. The
worker stops when the ``Inferencer`` is closed, deleted or garbage collected, or when the
process that started it ends.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import multiprocessing as mp
import os
import pickle
import selectors
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Client, Connection, Listener

import numpy as np
import torch

from graphcore.core.compiler import GraphModel
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, dumps, loads

RequestId = str
ACTIVE_SECONDS = 1.0  # a client that asked for an inference this recently is waited for when batching


class InferenceError(RuntimeError):
    """A request failed in the worker; the message says why."""


class InferencerClosed(InferenceError):
    """The worker is gone (closed, or it crashed)."""


def _to_wire(value):
    """Tensors travel as numpy arrays: pickling those is ~15x cheaper than pickling tensors."""
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            value = value.float()
        return value.numpy(force=True)  # detached, on the CPU
    if isinstance(value, tuple):
        return tuple(_to_wire(v) for v in value)
    return value


def _from_wire(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, tuple):
        return tuple(_from_wire(v) for v in value)
    return value


def _send(conn: Connection, message: tuple) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


# ----------------------------------------------------------------------------- client
class InferenceClient:
    """Talks to an inference worker. Picklable: it connects lazily in whichever process uses it,
    and is safe to share between threads."""

    def __init__(self, address: str, authkey: bytes):
        self._address, self._authkey = address, authkey
        self._setup()

    def _setup(self) -> None:
        self._conn: Connection | None = None
        self._pid: int | None = None
        self._send_lock, self._recv_lock = threading.Lock(), threading.Lock()
        self._replies: dict[RequestId, tuple[bool, object]] = {}
        self._counter = itertools.count()
        self._prefix = uuid.uuid4().hex[:12]

    def __getstate__(self) -> dict:
        return {"address": self._address, "authkey": self._authkey}

    def __setstate__(self, state: dict) -> None:
        self._address, self._authkey = state["address"], state["authkey"]
        self._setup()

    def _connection(self) -> Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked copy needs its own socket
            try:
                self._conn = Client(self._address, authkey=self._authkey)
            except (OSError, EOFError) as exc:
                raise InferencerClosed(f"the inference worker is not running ({exc})") from None
            self._pid, self._replies = os.getpid(), {}
        return self._conn

    def _request(self, kind: str, payload: object) -> RequestId:
        rid = f"{self._prefix}-{next(self._counter)}"
        with self._send_lock:
            conn = self._connection()
            try:
                _send(conn, (kind, rid, payload))
            except (OSError, EOFError) as exc:
                raise InferencerClosed(f"the inference worker is gone ({exc})") from None
        return rid

    def infer_async(self, *args: torch.Tensor) -> RequestId:
        """Send a request (the model's inputs, one sample or a batch each); returns its id."""
        arrays = tuple(_to_wire(a) if isinstance(a, torch.Tensor) else np.asarray(a) for a in args)
        return self._request("infer", arrays)

    def wait_for_resp(self, rid: RequestId, timeout: float | None = None):
        """The reply to ``rid``: the model's output, or ``InferenceError`` if that request failed.
        ``TimeoutError`` if ``timeout`` seconds pass first."""
        while True:
            with self._recv_lock:
                if rid in self._replies:
                    ok, value = self._replies.pop(rid)
                    break
                conn = self._connection()
                try:
                    ready = timeout is None or conn.poll(timeout)  # without a timeout, recv blocks by itself
                    if ready:
                        got, ok, value = _recv(conn)
                except (OSError, EOFError) as exc:
                    raise InferencerClosed(f"the inference worker is gone ({exc or 'connection closed'})") from None
                if not ready:
                    raise TimeoutError(f"no reply to request {rid} within {timeout} s")
                if got == rid:
                    break
                self._replies[got] = (ok, value)
        if not ok:
            raise InferenceError(value)
        return _from_wire(value)

    def __call__(self, *args: torch.Tensor):
        return self.wait_for_resp(self.infer_async(*args))

    def infer(self, *args: torch.Tensor):
        return self(*args)

    def update_params(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load new weights into the served model; requests sent after this see them."""
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        self.wait_for_resp(self._request("update", buffer.getvalue()))

    def stats(self) -> dict[str, float]:
        """How the worker has batched so far: forward passes, samples, largest and mean batch; its threads."""
        return self.wait_for_resp(self._request("stats", None))

    def ping(self, timeout: float = 30.0) -> bool:
        return self.wait_for_resp(self._request("ping", None), timeout=timeout) == "pong"

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


# ----------------------------------------------------------------------------- the inferencer
class Inferencer:
    """Serves ``model`` (a compiled graph, or a graph document) from a worker process."""

    def __init__(self, model: GraphModel | GraphDoc, device: str = "cpu", max_batch: int = 32,
                 *, threads: int | None = None, instances: int = 1, start_timeout: float = 120.0):
        """``threads``: the worker's torch intra-op threads. By default half of this machine's
        cores (at least one), since the clients run on the same machine: with 32 client processes
        on 2 cores, one thread served more requests per second than two, with batching and
        without, for a wide MLP and for a U-Net. The threads wait for work passively (see
        ``_passive_openmp``).

        ``instances``: how many forward passes may run at once, each on its own thread (torch
        releases the GIL inside its kernels). With one, every client waits while a batch runs; with
        two, the next batch gathers and runs while the first is still in flight, so a second core
        works instead of idling (self-play on 2 cores: see ``benchmarks/bench_selfplay.py``)."""
        if max_batch < 1:
            raise GraphError(f"max_batch must be at least 1, got {max_batch}")
        if instances < 1:
            raise GraphError(f"instances must be at least 1, got {instances}")
        threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // 2)
        if threads < 1:
            raise GraphError(f"threads must be at least 1, got {threads}")
        if isinstance(model, GraphModel):
            doc, state = model.doc, {k: v.detach().cpu() for k, v in model.state_dict().items()}
        else:
            doc, state = model, None
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self._dir = tempfile.mkdtemp(prefix="netcanvas-infer-")
        address, authkey = os.path.join(self._dir, "socket"), os.urandom(32)
        ctx = mp.get_context("spawn")
        ready_recv, ready_send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_serve, name="netcanvas-inferencer", daemon=True,
            args=(dumps(doc), buffer.getvalue(), device, max_batch, threads, instances, address, authkey,
                  ready_send))
        with _passive_openmp():
            self._process.start()
        ready_send.close()
        self._finalizer = weakref.finalize(self, _shutdown, self._process, address, authkey, self._dir)
        try:
            status = ready_recv.recv() if ready_recv.poll(start_timeout) else ("error", "it did not start in time")
        except EOFError:
            status = ("error", f"it exited early (exit code {self._process.join(5) or self._process.exitcode})")
        ready_recv.close()
        if status[0] != "ready":
            self._finalizer()
            raise GraphError(f"the inference worker could not start: {status[1]}")
        self.max_batch, self.device, self.instances = max_batch, device, instances
        self._client = InferenceClient(address, authkey)

    def __call__(self, *args: torch.Tensor):
        """Run the model on one sample or a batch, like calling it directly."""
        return self._client(*args)

    def infer_async(self, *args: torch.Tensor) -> RequestId:
        return self._client.infer_async(*args)

    def wait_for_resp(self, rid: RequestId, timeout: float | None = None):
        return self._client.wait_for_resp(rid, timeout)

    def update_params(self, state_dict: dict[str, torch.Tensor]) -> None:
        self._client.update_params(state_dict)

    def stats(self) -> dict[str, float]:
        return self._client.stats()

    def create_client(self) -> InferenceClient:
        """A new client with its own connection; it may be sent to other processes."""
        return InferenceClient(self._client._address, self._client._authkey)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self._process.is_alive()

    def close(self) -> None:
        """Stop the worker (also done when the inferencer is deleted)."""
        self._client.close()
        self._finalizer()

    def __enter__(self) -> Inferencer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _passive_openmp():
    """Start the worker with OMP_WAIT_POLICY=PASSIVE (unless the user set a policy): its OpenMP
    threads then sleep when out of work instead of spinning. OpenMP reads the policy once, when
    torch loads, so it must be in the environment the worker starts with. The worker shares the
    machine with its clients: spinning threads take their CPU time, and a thread that waits at a
    barrier for one the clients pushed off its core spins all the while (32 client processes on
    2 cores served a U-Net 10x slower with spinning threads)."""
    if "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


def _shutdown(process, address: str, authkey: bytes, folder: str) -> None:
    try:
        if process.is_alive():
            try:
                conn = Client(address, authkey=authkey)
                _send(conn, ("stop", "stop", None))
                conn.close()
            except (OSError, EOFError):
                pass
            process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- the worker


def _serve(doc_json: str, state_bytes: bytes, device: str, max_batch: int, threads: int, instances: int,
           address: str, authkey: bytes, ready: Connection) -> None:
    try:
        from graphcore.core.compiler import compile
        from graphcore.runtime.config import GraphIO
        from graphcore.runtime.devices import pick_device

        doc = loads(doc_json)
        model = compile(doc)
        state = torch.load(io.BytesIO(state_bytes), map_location="cpu", weights_only=True)
        if state is not None:
            model._load_checked(state, "state_dict")
        dev = pick_device(device)
        torch.set_num_threads(threads)
        model.to(dev).eval()
        inputs = GraphIO.of(doc).inputs
        listener = Listener(address, authkey=authkey)
    except BaseException as exc:  # noqa: BLE001 - the parent must hear why
        ready.send(("error", one_line(str(exc)) if isinstance(exc, GraphError) else _describe(exc)))
        return
    ready.send(("ready", None))
    ready.close()
    # One thread reads every connection and batches; with one instance it also runs the batch and
    # replies (no queue between threads, no GIL hand-offs per request), with more it hands each
    # batch to a free instance's thread and gathers the next. An accept thread hands new
    # connections over through a pipe, which also carries "stop" when the parent process ends.
    wake_recv, wake_send = mp.Pipe(duplex=False)
    arrivals: list[Connection] = []
    threading.Thread(target=_accept, args=(listener, arrivals, wake_send), daemon=True).start()
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), wake_send.send_bytes(b"stop")), daemon=True).start()
    worker = _Worker(model, dev, max_batch, inputs, instances)
    conns: list[Connection] = []
    inferring = _InferringClients()
    selector = selectors.DefaultSelector()  # registered once: a wait costs O(ready), not O(clients)
    selector.register(wake_recv, selectors.EVENT_READ)

    def ready(timeout: float | None) -> list[Connection]:
        return [key.fileobj for key, _ in selector.select(timeout)]

    def read(readable: list, items: list[tuple]) -> bool:
        """Take in everything the ready connections have sent; True when told to stop."""
        stop = False
        for conn in readable:
            if conn is wake_recv:
                while wake_recv.poll():
                    stop = stop or wake_recv.recv_bytes() == b"stop"
                while arrivals:
                    conns.append(arrivals.pop())
                    selector.register(conns[-1], selectors.EVENT_READ)
                continue
            try:  # one message; if the client sent more, the selector reports it ready again at once
                kind, rid, payload = _recv(conn)
                items.append((conn, kind, rid, payload))  # an infer payload stays numpy until its batch
                if kind == "infer":
                    inferring.saw(conn, time.monotonic())
            except (OSError, EOFError, pickle.UnpicklingError, ValueError):
                selector.unregister(conn)
                conn.close()
                conns.remove(conn)
                inferring.forget(conn)
        return stop

    with torch.inference_mode():
        while True:
            worker.wait_for_instance()  # requests arriving meanwhile wait in their sockets: a fuller batch
            items: list[tuple] = []
            stop = read(ready(None), items)
            # Clients that were just answered need a moment to send again: wait a little (a fraction
            # of one forward pass) for them, so that batches fill up instead of alternating halves.
            deadline = time.monotonic() + worker.gather_seconds()
            expected = inferring.count(time.monotonic()) - worker.requests_in_flight
            while not stop and len(items) < max_batch:
                arrived = ready(0)  # what is waiting already joins at no cost in time
                if not arrived:
                    left = deadline - time.monotonic()
                    if len(items) >= expected or left <= 0:
                        break
                    arrived = ready(left)
                    if not arrived:
                        break
                stop = read(arrived, items)
            if stop or not worker.handle(items):
                break
    worker.close()
    selector.close()
    listener.close()


class _InferringClients:
    """When each client last asked for an inference. A batch waits only for the clients that did within
    ``ACTIVE_SECONDS``: one that only pings or sends weights (a trainer's) would otherwise hold every
    batch for the full gather wait."""

    def __init__(self, window: float = ACTIVE_SECONDS):
        self.window = window
        self._last: dict[object, float] = {}

    def saw(self, client: object, now: float) -> None:
        self._last[client] = now

    def forget(self, client: object) -> None:
        self._last.pop(client, None)

    def count(self, now: float) -> int:
        """The clients that asked within the window before ``now``."""
        return sum(at > now - self.window for at in self._last.values())


def _accept(listener: Listener, arrivals: list, wake: Connection) -> None:
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError, mp.AuthenticationError):
            if getattr(listener, "_listener", None) is None:
                return
            continue
        arrivals.append(conn)
        try:
            wake.send_bytes(b"conn")
        except OSError:
            return


class _Worker:
    def __init__(self, model: GraphModel, device: torch.device, max_batch: int,
                 inputs: Sequence[tuple[str, tuple[int, ...], str]], instances: int = 1):
        self.model, self.device, self.max_batch, self.inputs = model, device, max_batch, inputs
        self.batch_rows: list[int] = []  # samples in each forward pass
        self.forward_seconds = 0.0  # the last forward pass
        self.instances = instances
        self._pool = ThreadPoolExecutor(instances, "netcanvas-instance") if instances > 1 else None
        self._free = threading.Semaphore(instances)  # instances not running a batch
        self._reply_lock = threading.Lock()  # two instances may answer one connection
        self.requests_in_flight = 0  # in batches that run now (their clients wait, they send nothing)
        self.batches_in_flight = 0
        self.most_in_flight = 0  # the most batches that ran at once
        self._count_lock = threading.Lock()

    def wait_for_instance(self) -> None:
        """Return once an instance is free (at once with a single instance: it runs in this thread)."""
        self._free.acquire()
        self._free.release()

    def drain(self) -> None:
        """Wait for every batch in flight: what comes next (new weights) must not overtake them."""
        for _ in range(self.instances):
            self._free.acquire()
        for _ in range(self.instances):
            self._free.release()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def gather_seconds(self) -> float:
        """How long to wait for more requests before a batch: none without batching, else half
        of the last forward pass, at most 5 ms."""
        return 0.0 if self.max_batch == 1 else min(0.005, 0.5 * self.forward_seconds)

    def handle(self, items: list[tuple]) -> bool:
        """Answer a group of waiting requests; False when told to stop."""
        pending: list[tuple] = []
        for conn, kind, rid, payload in items:
            if kind == "stop":
                return False
            if kind == "ping":
                self.reply(conn, rid, True, "pong")
            elif kind == "stats":
                rows = self.batch_rows
                self.reply(conn, rid, True, {"batches": len(rows), "samples": sum(rows),
                                                   "max_batch": max(rows, default=0),
                                                   "mean_batch": sum(rows) / max(1, len(rows)),
                                                   "threads": torch.get_num_threads(),
                                                   "instances": self.instances,
                                                   "most_in_flight": self.most_in_flight,
                                                   "openmp_wait_policy": os.environ.get("OMP_WAIT_POLICY")})
            elif kind == "update":
                self.run_batch(pending)  # earlier requests see the old weights
                pending = []
                self.drain()
                try:
                    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
                    self.model._load_checked(state, "update_params")
                    self.reply(conn, rid, True, None)
                except Exception as exc:  # noqa: BLE001
                    self.reply(conn, rid, False, _describe(exc))
            elif kind == "infer":
                problem = self.check(payload)
                if problem:
                    self.reply(conn, rid, False, problem)
                else:
                    pending.append((conn, rid, payload))
        self.run_batch(pending)
        return True

    def check(self, args: tuple) -> str | None:
        """Why this request (numpy arrays, as they came) cannot join a batch, or None: argument
        count, shapes, dtypes."""
        if not isinstance(args, tuple) or len(args) != len(self.inputs):
            names = ", ".join(n for n, _, _ in self.inputs)
            got = len(args) if isinstance(args, tuple) else type(args).__name__
            return f"the model takes {len(self.inputs)} input(s) ({names}), got {got}"
        for arg, (name, shape, dtype) in zip(args, self.inputs):
            if not isinstance(arg, np.ndarray):
                return f"input {name!r}: expected a tensor, got {type(arg).__name__}"
            tail = arg.shape[arg.ndim - len(shape):]
            if tail != shape or arg.ndim not in (len(shape), len(shape) + 1):
                return (f"input {name!r} takes one sample {list(shape)} or a batch {['N', *shape]}, "
                        f"got {list(arg.shape)}")
            if (dtype == "int64") == (arg.dtype.kind == "f"):
                return f"input {name!r} takes {dtype} values, got {arg.dtype}"
        rows = {a.shape[0] if a.ndim == len(shape) + 1 else None for a, (_, shape, _) in zip(args, self.inputs)}
        if len(rows) > 1:
            return f"the inputs must all be single samples or batches of the same size, got {sorted(map(str, rows))}"
        return None

    def run_batch(self, pending: list[tuple]) -> None:
        """Concatenate requests into batches of at most max_batch samples, run, split the outputs."""
        group: list[tuple] = []
        rows = 0
        for item in pending:
            size = self._rows(item[2])
            if group and rows + size > self.max_batch:
                self._start(group)
                group, rows = [], 0
            group.append(item)
            rows += size
        if group:
            self._start(group)

    def _start(self, group: list[tuple]) -> None:
        """Run a batch: in this thread with one instance, else on a free instance's thread (waiting for one)."""
        self._free.acquire()
        with self._count_lock:
            self.requests_in_flight += len(group)
            self.batches_in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.batches_in_flight)

        def done(_future=None) -> None:
            with self._count_lock:
                self.requests_in_flight -= len(group)
                self.batches_in_flight -= 1
            self._free.release()
        if self._pool is not None:
            self._pool.submit(self._run, group).add_done_callback(done)
            return
        try:
            self._run(group)
        finally:
            done()

    def _rows(self, args: tuple) -> int:
        first, (_, shape, _) = args[0], self.inputs[0]
        return first.shape[0] if first.ndim == len(shape) + 1 else 1

    def _run(self, group: list[tuple]) -> None:
        try:
            outputs = self._forward([item[2] for item in group])
        except Exception:  # noqa: BLE001 - find out which request it was
            if len(group) == 1:
                conn, rid, _ = group[0]
                try:
                    self._forward([group[0][2]])
                except Exception as exc:  # noqa: BLE001
                    self.reply(conn, rid, False, _describe(exc))
                return
            for item in group:
                self._run([item])
            return
        for (conn, rid, _), output in zip(group, outputs):
            self.reply(conn, rid, True, output)

    def _forward(self, requests: list[tuple]) -> list:
        """One forward pass over the requests' samples; each request's share of the outputs, as
        numpy arrays (joining and splitting in numpy costs far less per request than in torch)."""
        columns = []
        for j, (_, shape, dtype) in enumerate(self.inputs):
            parts = [args[j] if args[j].ndim == len(shape) + 1 else args[j][None] for args in requests]
            column = torch.from_numpy(np.concatenate(parts)).to(self.device)  # (sum of rows, *shape)
            columns.append(column.float() if dtype == "float32" else column.long())
        start = time.monotonic()
        out = self.model(*columns)
        self.forward_seconds = time.monotonic() - start
        sizes = [self._rows(args) for args in requests]
        self.batch_rows.append(sum(sizes))
        arrays = [_to_wire(o) for o in (out if isinstance(out, tuple) else (out,))]  # (rows, ...) each
        results, row = [], 0
        for args, size in zip(requests, sizes):
            single = args[0].ndim == len(self.inputs[0][1])
            parts = [a[row] if single else a[row:row + size] for a in arrays]
            results.append(tuple(parts) if isinstance(out, tuple) else parts[0])
            row += size
        return results

    def reply(self, conn: Connection, rid: RequestId, ok: bool, value) -> None:
        try:
            with self._reply_lock:
                _send(conn, (rid, ok, _to_wire(value)))
        except (OSError, EOFError):
            pass  # that client has gone; the others are unaffected


def _describe(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")[:500]
