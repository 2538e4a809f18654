"""AlphaZero by self-play (``--task alphazero --game G``): worker processes play games with MCTS
whose leaves one batching ``Inferencer`` evaluates, and the trainer learns from their games.

    trainer = SelfPlayTrainer(gc.template("alphazero_tictactoe"),
                              TrainConfig(task="alphazero", game="tictactoe", minutes=5), out="runs/ttt")
    result = trainer.fit()

Each of ``workers`` processes (``WorkerPool``) plays whole games with ``AlphaZeroSearch``:
Dirichlet noise at the root, moves drawn from the visit counts at the game's temperature schedule
(``SEARCH``), each leaf batch sent through its own Inferencer client, so the one Inferencer batches
the leaves of all workers. A finished game comes back over the worker's pipe as a ``GameRecord``:
every position's planes, its visit distribution (the policy target) and the outcome from the side
to move's view (the value target; for connect4 half of it is the search's root value,
``ROOT_VALUE_SHARE``), under every symmetry of the board. A worker that dies is
started again (a "worker" event and a warning say so) and the run goes on. A worker may also play
several games at once (``WorkerPool(games_at_once=N)``, ``play_games_at_once``): each round it sends the
next leaves of every game as one request and searches its other games while the Inferencer evaluates;
the trainer's workers play ``SelfPlayTrainer.GAMES_AT_ONCE`` (2) games each.

The trainer (this process) keeps the last ``replay_size`` positions (``ReplayBuffer``), draws
batches from them, minimises policy cross-entropy + value MSE (AdamW's weight decay on top), and
sends its weights to the Inferencer every ``update_every`` steps. It trains at most
``sample_reuse`` samples per position the workers have sent, so on a small machine self-play and
training share the CPU in a fixed ratio. An epoch is ``epoch_steps`` steps; at its end the current
weights play ``eval_games`` games (half as x) against each fixed opponent (``opponents``) and the
score (wins + draws / 2 per game) of each goes to ``metrics.jsonl``. "step" events add games
played, positions per second and the Inferencer's mean batch size to the losses.

The run folder, time budget, checkpoints and resume are the ``Trainer``'s; ``last.pt`` also holds
the replay buffer and the counts of games and positions, so a resumed run trains on the same data.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graphcore.core.compiler import GraphModel, compile
from graphcore.core.diagnostics import GraphError, one_line
from graphcore.core.document import GraphDoc, dumps, loads
from graphcore.runtime.config import TrainResult
from graphcore.runtime.devices import pick_device
from graphcore.runtime.games import GAMES, Game, get_game
from graphcore.runtime.games.check import check_game_graph
from graphcore.runtime.games.opponents import (
    Agent,
    minimax_agent,
    one_ply_agent,
    perfect_agent,
    play_match,
    random_agent,
)
from graphcore.runtime.mcts import AlphaZeroSearch, Evaluate, SearchConfig, Steps, as_numpy
from graphcore.runtime.serving import InferenceClient, InferenceError, Inferencer
from graphcore.runtime.train import LAST_PT, Trainer, check_out_dir
from graphcore.runtime.workspace import timestamp

log = logging.getLogger(__name__)

SEARCH: dict[str, dict[str, Any]] = {
    # alpha about 10 / legal moves; moves drawn in proportion to visits for the opening, then the best
    "tictactoe": {"dirichlet_alpha": 1.0, "temperatures": ((0, 1.0),)},
    "connect4": {"dirichlet_alpha": 1.0, "temperatures": ((0, 1.0), (12, 0.0))},
}
"""Self-play search settings per game, on top of ``SearchConfig``'s defaults."""
ROOT_VALUE_SHARE: dict[str, float] = {"connect4": 0.5}
"""Per game, the share of a position's value target taken from its search's root value instead of the
game's outcome (0 where not listed). The outcome of a long game says little about its early positions
(one mistake late decides it); the root value is the search's own judgement of the position."""
MINIMAX_DEPTH = 2  # the opponent of a game too large to solve
WORKER_JOIN_SECONDS = 5.0
MAX_DEATHS = 10  # workers that die one after another without a game in between: something is broken, stop


def selfplay_search(game: Game, simulations: int) -> SearchConfig:
    """The search the workers run for ``game``: root noise, the game's temperature schedule."""
    return SearchConfig(simulations=simulations, **SEARCH.get(game.name, {}))


def play_search(simulations: int) -> SearchConfig:
    """The search an agent plays and is measured with: no noise, always the most visited move."""
    return SearchConfig(simulations=simulations, noise_fraction=0.0, temperatures=((0, 0.0),))


def opponents(game: Game) -> dict[str, Callable[[Game, int], Agent]]:
    """The fixed opponents a run is measured against: random, 1-ply, and perfect play where the game
    can be solved, else a depth-2 minimax."""
    strongest: dict[str, Callable[[Game, int], Agent]] = (
        {"perfect": perfect_agent} if game.solvable
        else {f"minimax{MINIMAX_DEPTH}": lambda g, seed: minimax_agent(g, MINIMAX_DEPTH, seed)})
    return {"random": random_agent, "one_ply": one_ply_agent, **strongest}


def game_of(doc: GraphDoc, name: str | None) -> Game:
    """The game named by ``--game``, else by the graph's ``meta.game``; one line when neither names one."""
    name = name or doc.meta.get("game")
    if not name:
        raise GraphError(f"graph {doc.name!r}: name the game to learn with --game ({' or '.join(sorted(GAMES))}); "
                         f"the graph's meta does not name one")
    return get_game(str(name))


def model_evaluate(model: torch.nn.Module) -> Evaluate:
    """A local model as a search's ``evaluate``: no gradients, in whatever mode it is."""
    def evaluate(planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits, value = model(planes.to(device))
        return logits, value
    return evaluate


# ----------------------------------------------------------------------------- games
@dataclass
class GameRecord:
    """One self-play game as training samples, every symmetry of each position included."""

    planes: np.ndarray  # (N, 3, H, W) uint8
    policies: np.ndarray  # (N, num_moves) float32, the visit distribution at the root
    values: np.ndarray  # (N,) float32, the side to move's value target: outcome, maybe mixed with the root value
    moves: int  # positions played (before the symmetries)

    def __len__(self) -> int:
        """The samples it holds (positions times symmetries)."""
        return len(self.values)


def play_selfplay_game(game: Game, search: AlphaZeroSearch, root_value_share: float = 0.0) -> GameRecord:
    """Plays one game against itself with ``search``; its positions as samples (``GameRecord``), each
    valued ``(1 - root_value_share) * outcome + root_value_share * root value`` for its side to move."""
    return search.complete(selfplay_game_steps(game, search, root_value_share))


def selfplay_game_steps(game: Game, search: AlphaZeroSearch, root_value_share: float = 0.0) -> Steps[GameRecord]:
    """``play_selfplay_game`` in steps: it yields each batch of planes its searches need evaluated."""
    state, seen = game.initial(), []
    while state.outcome is None:
        move, result = yield from search.select_move_steps(state)
        seen.append((game.encode(state), torch.from_numpy(result.policy(1.0)).float(), state.to_play, result.value))
        state = game.play(state, move)
    planes, policies, values = [], [], []
    for position, policy, player, root_value in seen:
        value = (1 - root_value_share) * state.outcome * player + root_value_share * root_value
        for sym_planes, sym_policy in game.symmetries(position, policy):
            planes.append(sym_planes)
            policies.append(sym_policy)
            values.append(float(value))
    return GameRecord(torch.stack(planes).to(torch.uint8).numpy(), torch.stack(policies).numpy(),
                      np.asarray(values, dtype=np.float32), len(seen))


class SampleRing:
    """The last ``capacity`` samples, in a ring of one tensor per field (``fields``: name -> the shape
    of one sample and its dtype); what a self-play trainer draws its batches from."""

    def __init__(self, capacity: int, fields: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        self.capacity = capacity
        self.fields = {name: torch.zeros((capacity, *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
        self.size = self.next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, record: Any) -> None:
        """A game's record (the task's kind) as samples."""
        raise NotImplementedError

    def add_samples(self, samples: dict[str, np.ndarray]) -> None:
        """Samples (one array per field, the same length each), in place of the oldest once the ring is full."""
        n = min(len(next(iter(samples.values()))), self.capacity)
        idx = (self.next + torch.arange(n)) % self.capacity  # (n,)
        for name, tensor in self.fields.items():
            tensor[idx] = torch.from_numpy(samples[name][-n:]).to(tensor.dtype)
        self.next = (self.next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` samples drawn uniformly with replacement, one tensor per field."""
        idx = torch.randint(self.size, (n,), generator=generator)
        return {name: tensor[idx] for name, tensor in self.fields.items()}

    def state_dict(self) -> dict[str, Any]:
        return {name: tensor[:self.size].clone() for name, tensor in self.fields.items()} | {"next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The ring that ``state_dict`` saved; ValueError if it held more than this one's capacity."""
        size = len(state[next(iter(self.fields))])
        if size > self.capacity:
            raise ValueError(f"the saved replay buffer holds {size} samples, more than its capacity {self.capacity}")
        for name, tensor in self.fields.items():
            tensor[:size] = state[name]
        self.size, self.next = size, int(state["next"]) % self.capacity


class ReplayBuffer(SampleRing):
    """AlphaZero's samples: planes (uint8), the search's policy, the game's outcome."""

    def __init__(self, capacity: int, game: Game):
        super().__init__(capacity, {"planes": (game.planes_shape, torch.uint8),
                                    "policies": ((game.num_moves,), torch.float32), "values": ((), torch.float32)})
        self.planes, self.policies, self.values = (self.fields[k] for k in ("planes", "policies", "values"))

    def add(self, record: GameRecord) -> None:
        """The game's samples, in place of the oldest once the buffer is full."""
        self.add_samples({"planes": record.planes, "policies": record.policies, "values": record.values})

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` samples drawn uniformly with replacement: planes (n, 3, H, W) float, policies, values."""
        drawn = self.draw(n, generator)
        return drawn["planes"].float(), drawn["policies"], drawn["values"]


# ----------------------------------------------------------------------------- workers
class LocalEvaluator:
    """A search's ``evaluate`` by a copy of the model in the worker's own process, unbatched across
    workers (what the Inferencer is measured against). Picklable: it travels as the graph's JSON and
    its weights, and compiles on first use."""

    def __init__(self, model: GraphModel):
        self.doc_json = dumps(model.doc)
        self.state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        self._evaluate: Evaluate | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"doc_json": self.doc_json, "state": self.state, "_evaluate": None}

    def __call__(self, planes: torch.Tensor) -> tuple[Any, Any]:
        if self._evaluate is None:
            model = compile(loads(self.doc_json))
            model.load_state_dict(self.state)
            self._evaluate = model_evaluate(model.eval())
        return self._evaluate(planes)


Player = Callable[[Game, Any, SearchConfig, int], Callable[[], Any]]
"""A worker's self-play: (game, its Inferencer client or local evaluator, search, seed) -> a function
that plays one game and returns its record (a ``GameRecord``, or another task's). Picklable: a
module-level function (or a partial of one), since it travels to the worker process."""


def alphazero_player(game: Game, evaluate: Evaluate, search: SearchConfig, seed: int) -> Callable[[], GameRecord]:
    """AlphaZero's self-play: ``AlphaZeroSearch`` over the rules, leaves evaluated by ``evaluate``."""
    searcher = AlphaZeroSearch(game, evaluate, search, seed=seed)
    share = ROOT_VALUE_SHARE.get(game.name, 0.0)
    return lambda: play_selfplay_game(game, searcher, share)


def play_games_at_once(game: Game, evaluate: Evaluate, search: SearchConfig, seed: int, count: int,
                       stop: Any, send: Callable[[GameRecord], None]) -> None:
    """AlphaZero's self-play, ``count`` games at a time until ``stop`` is set, in two groups: each group
    searches on to its games' next leaves and sends them for evaluation together (through an Inferencer,
    as one request, without waiting for the answer), then the other group takes the answers to its last
    request and does the same; so the worker searches while the Inferencer evaluates. A finished game
    goes to ``send`` and a new one takes its place."""
    searcher = AlphaZeroSearch(game, evaluate, search, seed=seed)
    share = ROOT_VALUE_SHARE.get(game.name, 0.0)

    def new_game() -> Steps[GameRecord]:
        return selfplay_game_steps(game, searcher, share)

    groups = [[new_game() for _ in range(size)] for size in (count - count // 2, count // 2) if size]
    in_flight = deque((group, submit_evaluations(evaluate, [next(steps) for steps in group])) for group in groups)
    while not stop.is_set():
        group, answers = in_flight.popleft()
        requests = []
        for index, answer in enumerate(answers()):
            try:
                requests.append(group[index].send(answer))
            except StopIteration as finished:
                send(finished.value)
                group[index] = new_game()
                requests.append(next(group[index]))
        in_flight.append((group, submit_evaluations(evaluate, requests)))


Answers = Callable[[], list[tuple[Any, Any]]]


def submit_evaluations(evaluate: Evaluate, requests: list[torch.Tensor]) -> Answers:
    """Starts evaluating ``requests`` (batches of planes); returns what waits for each one's (logits,
    values). An Inferencer client sends them as one request and does not wait; a ``LocalEvaluator`` (the
    unbatched baseline) evaluates each now; any other ``evaluate`` all of them now in one call."""
    sizes = [len(planes) for planes in requests]
    if isinstance(evaluate, InferenceClient):
        rid = evaluate.infer_async(torch.cat(requests))
        return lambda: _split(evaluate.wait_for_resp(rid), sizes)
    if isinstance(evaluate, LocalEvaluator):
        answers = [evaluate(planes) for planes in requests]
    else:
        answers = _split(evaluate(torch.cat(requests)), sizes)
    return lambda: answers


def _split(output: tuple[Any, Any], sizes: list[int]) -> list[tuple[Any, Any]]:
    """(logits, values) of the joined requests, split back into each request's rows."""
    logits, values = output  # (sum of sizes, num_moves), (sum of sizes,) or (sum of sizes, 1)
    ends = np.cumsum(sizes)[:-1]
    return list(zip(np.split(as_numpy(logits), ends), np.split(as_numpy(values).reshape(-1), ends)))


def _worker_main(evaluate: Evaluate, game_name: str, search: SearchConfig, seed: int, conn: Connection,
                 stop: Any, player: Player, games_at_once: int = 1) -> None:
    """A self-play worker: plays games until ``stop`` is set, sending each over ``conn``; ``games_at_once``
    at a time (``play_games_at_once``, AlphaZero's player only) when more than one."""
    torch.set_num_threads(1)  # the Inferencer does the heavy lifting; many workers share few cores
    game = get_game(game_name)
    try:
        if games_at_once > 1:
            play_games_at_once(game, evaluate, search, seed, games_at_once, stop, conn.send)
            return
        play_one = player(game, evaluate, search, seed)
        while not stop.is_set():
            conn.send(play_one())
    except (InferenceError, BrokenPipeError, EOFError, KeyboardInterrupt):
        pass  # the run is ending (its Inferencer or its trainer is gone)


class WorkerPool:
    """``count`` self-play processes, each evaluating leaves with its own ``evaluators()`` (an Inferencer's
    ``create_client``: one client each); ``poll`` collects their games and starts again a worker that
    has died (``on_restart`` hears of it). ``player`` says what a worker plays (AlphaZero's by default);
    with AlphaZero's a worker may play ``games_at_once`` games at a time (``play_games_at_once``)."""

    def __init__(self, evaluators: Callable[[], Evaluate], game: Game, search: SearchConfig, count: int, seed: int,
                 on_restart: Callable[[int, int | None], None] | None = None, player: Player = alphazero_player,
                 games_at_once: int = 1):
        if games_at_once < 1 or (games_at_once > 1 and player is not alphazero_player):
            raise GraphError(f"games_at_once must be at least 1, and 1 for any player but AlphaZero's; "
                             f"got {games_at_once}")
        self.evaluators, self.game, self.search, self.seed, self.player = evaluators, game, search, seed, player
        self.games_at_once = games_at_once
        self.on_restart = on_restart
        self.ctx = mp.get_context("spawn")
        self.stop = self.ctx.Event()
        self.processes: list[Any] = [None] * count
        self.conns: list[Connection | None] = [None] * count
        self.starts = 0  # processes started so far: each gets its own seed
        self.restarts = 0
        self.games_by_worker = [0] * count  # games each worker slot has sent so far
        self.deaths_since_game = 0

    def start(self) -> WorkerPool:
        for index in range(len(self.processes)):
            self._launch(index)
        return self

    def _launch(self, index: int) -> None:
        receive, send = self.ctx.Pipe(duplex=False)
        seed = int(np.random.SeedSequence([self.seed, self.starts]).generate_state(1)[0])
        process = self.ctx.Process(target=_worker_main, name=f"netcanvas-selfplay-{index}", daemon=True,
                                   args=(self.evaluators(), self.game.name, self.search, seed, send,
                                         self.stop, self.player, self.games_at_once))
        process.start()
        send.close()  # the worker holds the sending end: its death closes the pipe
        self.processes[index], self.conns[index] = process, receive
        self.starts += 1

    def poll(self, timeout: float) -> list[Any]:
        """The games finished so far (their records), waiting up to ``timeout`` seconds for one; restarts
        dead workers."""
        conns = [c for c in self.conns if c is not None]
        games: list[Any] = []
        for conn in wait(conns, timeout):
            assert isinstance(conn, Connection)
            index = self.conns.index(conn)
            try:
                while conn.poll():
                    games.append(conn.recv())
                    self.games_by_worker[index] += 1
            except (EOFError, OSError):
                conn.close()
                self.conns[index] = None
        if games:
            self.deaths_since_game = 0
        self._restart_dead()
        return games

    def _restart_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if self.stop.is_set() or (process.is_alive() and self.conns[index] is not None):
                continue
            process.join(WORKER_JOIN_SECONDS)
            exitcode, conn = process.exitcode, self.conns[index]
            if conn is not None:
                conn.close()
            self.deaths_since_game += 1
            if self.deaths_since_game > MAX_DEATHS:
                raise GraphError(f"self-play workers died {self.deaths_since_game} times in a row without "
                                 f"finishing a game (the last with exit code {exitcode}); their errors are above")
            log.warning("self-play worker %d died (exit code %s); starting it again", index, exitcode)
            self.restarts += 1
            self._launch(index)
            if self.on_restart is not None:
                self.on_restart(index, exitcode)

    def close(self) -> None:
        """Stop every worker (a game in progress is dropped)."""
        self.stop.set()
        for process in self.processes:
            if process is not None and process.is_alive():
                process.terminate()
        for process, conn in zip(self.processes, self.conns):
            if process is not None:
                process.join(WORKER_JOIN_SECONDS)
            if conn is not None:
                conn.close()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- the trainer
class SelfPlayTrainer(Trainer):
    """Trains an AlphaZero network by self-play into one run folder (see the module docstring).

    MuZero (``runtime/muzero.py``) subclasses it: what differs is the task's name (``TASK``), the
    network the Inferencer serves (``_network_doc``), what a worker plays (``_player``) and how many
    games at once (``GAMES_AT_ONCE``), the replay buffer (``_make_buffer``), the losses of a batch
    (``_losses``) and the search that plays the evaluation matches (``_search``)."""

    CHECKPOINT = LAST_PT | {"replay": dict, "selfplay": dict}
    FIGURES: tuple[str, ...] = ("loss", "policy_loss", "value_loss")
    TASK = "alphazero"
    # Each worker plays two games in turns: one searches while the Inferencer evaluates the other's leaves
    # (alphazero_connect4, 2 workers, 50 simulations, 8 leaves a request: 33 positions/s with one game
    # at a time, 43 with two).
    GAMES_AT_ONCE = 2

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise GraphError(f"{self.TASK} trains in one process (its self-play workers are processes of their "
                             f"own); drop --nproc")
        self.rank, self.world, self.main = 0, 1, True
        if self._resume_state is None and self.run_dir is not None:
            check_out_dir(self.run_dir)
        self.game = game_of(self.doc, cfg.game)
        cfg.game = self.game.name
        check_game_graph(self.doc, self.game, self.TASK)
        self.network = self._network_doc()
        self.device = pick_device(cfg.device)
        self.shape = self.game.planes_shape
        self.amp, self.channels_last, self.layout = None, False, torch.preserve_format
        start = self.game.initial()  # the preflight's two positions: the first two of a game
        self._prepare_models(torch.stack([self.game.encode(start), self.game.encode(self.game.play(start, 0))]))
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.steps_per_epoch, self.local_batch = cfg.epoch_steps, cfg.batch_size
        self._epoch_steps = cfg.epochs * cfg.epoch_steps if cfg.epochs is not None else None
        self.total_steps = self._epoch_steps or 10 * cfg.epoch_steps  # re-planned under a time budget
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000)
        self._lr: float | None = None
        self.step = self.epoch = self.batch = 0
        self.partial = self._new_partial()
        self.best: float | None = None
        self.elapsed = 0.0
        self.buffer = self._make_buffer()
        self.counts = {"games": 0, "positions": 0, "samples": 0}  # received from the workers, in all
        if self._resume_state is not None:
            self._restore(self._resume_state)
        else:
            self._create_run_dir()

    def _prepare_models(self, train_x: torch.Tensor) -> None:
        if self.model is None or self.model.doc is not self.network:  # MuZero trains a network made from the doc
            self.model = compile(self.network).init(seed=self.config.seed)
        super()._prepare_models(train_x)

    def _write_data_files(self) -> None:
        """A game run has no dataset to describe."""

    @classmethod
    def _new_partial(cls) -> dict:
        return {name: 0.0 for name in cls.FIGURES} | {"count": 0}

    # ------------------------------------------------------------------ what a task supplies
    def _network_doc(self) -> GraphDoc:
        """The graph the trainer trains and the Inferencer serves: AlphaZero's is the document itself."""
        return self.doc

    def _make_buffer(self) -> SampleRing:
        return ReplayBuffer(self.config.replay_size, self.game)

    def _player(self) -> Player:
        """What each self-play worker plays (picklable)."""
        return alphazero_player

    def _losses(self) -> dict[str, torch.Tensor]:
        """The losses of one batch from the replay buffer: ``loss`` (minimised) first, then its parts."""
        planes, target_policy, target_value = (t.to(self.device) for t in self.buffer.sample(self.config.batch_size,
                                                                                            self.generator))
        logits, value = self.model(planes)  # (B, A), (B, 1)
        policy_loss = -(target_policy * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
        value_loss = F.mse_loss(value.float().reshape(-1), target_value)
        return {"loss": policy_loss + value_loss, "policy_loss": policy_loss, "value_loss": value_loss}

    def _search(self, config: SearchConfig) -> Any:
        """The search the current weights play with (in this process): the evaluation matches' agent."""
        return AlphaZeroSearch(self.game, model_evaluate(self.model), config)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Self-play and train until the planned epochs, the time budget, a stop request or a NaN loss."""
        cfg = self.config
        self.deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes is not None else None
        self._setup()
        self._record_status(status="running", pid=os.getpid(), device=str(self.device), started=timestamp(),
                            ended=None, message="")
        start = time.monotonic()
        self._t0, self._step0, self._step_cost, self._end_cost = start, self.step, None, None
        restore_signals = self._install_signal_handlers()
        bar = self._progress_bar()
        self._emit({"type": "start", "run_dir": str(self.run_dir), "epochs": cfg.epochs, "minutes": cfg.minutes,
                    "step": self.step, "total_steps": self.total_steps, "device": str(self.device),
                    "task": cfg.task, "game": self.game.name, "workers": cfg.workers})
        self._saved_at = start
        self._window: list[dict[str, float]] = []  # the steps' figures since the last "step" event
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            # The workers and the Inferencer share the cores: an intra-op thread waiting at a barrier for one
            # pushed off its core spins (a batch-64 step of alphazero_tictactoe at load 7 on 2 cores: 600 ms
            # with 2 threads, 40 ms with one).
            torch.set_num_threads(1)
        try:
            search = selfplay_search(self.game, cfg.simulations)
            with Inferencer(self._served_copy(), device=cfg.device, max_batch=64) as inferencer, \
                    WorkerPool(inferencer.create_client, self.game, search, cfg.workers,
                               seed=cfg.seed * 1000 + self.step, on_restart=self._worker_restarted,
                               player=self._player(), games_at_once=self.GAMES_AT_ONCE) as pool:
                self.inferencer, self.pool = inferencer, pool
                self._since = {"at": time.monotonic(), "positions": self.counts["positions"]}
                return self._loop(start, bar)
        except BaseException as exc:
            self._record_status(status="failed", ended=timestamp(), message=one_line(str(exc)) or type(exc).__name__)
            raise
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
            restore_signals()

    def _finish_budget(self, start: float) -> TrainResult:
        """The time budget is used: the last stretch ends as a (partial) epoch, its matches played."""
        if self.batch > 0:
            self._end_epoch(start)
        return self._finish("finished", f"finished: time budget of {self.config.minutes:g} min used, "
                                        f"{self.step} steps, {self.counts['games']} games: "
                                        f"{self._val_summary()}; run in {self.run_dir}", start)

    def _loop(self, start: float, bar: Any) -> TrainResult:
        cfg = self.config
        while cfg.epochs is None or self.epoch < cfg.epochs:
            while self.batch < self.steps_per_epoch:
                stop_reason = self._wait_for_games()
                if stop_reason is None:
                    loss = self._selfplay_step()
                    if not math.isfinite(loss):
                        return self._finish("nan", self._nan_message(loss, self.step + 1), start)
                    self.step += 1
                    self.batch += 1
                    self._after_step(start, bar)
                    stop_reason = self._stop_reason_now()
                if stop_reason is not None:
                    return self._stopped(stop_reason, start)
            self._end_epoch(start)
        return self._finish("finished", f"finished {cfg.epochs} epochs ({self.step} steps, {self.counts['games']} "
                                        f"games): {self._val_summary()}; run in {self.run_dir}", start)

    def _wait_for_games(self) -> str | None:
        """Take in the workers' games; wait while the buffer has too few samples or training is ahead of
        self-play by more than ``sample_reuse``. A stop reason if one comes while waiting, else None."""
        cfg = self.config
        self._take(self.pool.poll(0))
        while (self.buffer.size < cfg.batch_size
               or (self.step + 1) * cfg.batch_size > cfg.sample_reuse * self.counts["samples"]):
            stop_reason = self._stop_reason_now()
            if stop_reason is not None:
                return stop_reason
            self._take(self.pool.poll(0.5))
        return None

    def _take(self, games: list[Any]) -> None:
        for record in games:
            self.buffer.add(record)
            self.counts["games"] += 1
            self.counts["positions"] += record.moves
            self.counts["samples"] += len(record)

    def _stop_reason_now(self) -> str | None:
        """"time" when the budget has no room for another step, a stop request's reason, or None."""
        if self._stop_reason is not None or (self.stop_event is not None and self.stop_event.is_set()):
            return self._stop_reason or "stop requested"
        return "time" if self._replan() else None

    def _end_reserve(self) -> float:
        """Seconds kept at a budget's end for the last evaluation: what the last one took."""
        return self._end_cost or 0.0

    def _selfplay_step(self) -> float:
        """One optimizer step on a batch from the replay buffer; its loss."""
        cfg = self.config
        self._schedule_lr(self.optimizer)
        self.model.train()
        losses = self._losses()
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self._params, cfg.clip_grad)
        self.optimizer.step()
        figures = {name: value.item() for name, value in losses.items()}
        for name, number in figures.items():
            self.partial[name] += number
        self.partial["count"] += 1
        self._window.append(figures)
        return figures["loss"]

    def _after_step(self, start: float, bar: Any) -> None:
        """New weights to the Inferencer, a "step" event and a checkpoint when each is due."""
        cfg = self.config
        if self.step % cfg.update_every == 0:
            self.inferencer.update_params(self._served_state())
        if self.step % cfg.log_every == 0 or self.step == self._step0 + 1:
            self._selfplay_event(bar)
        if bar is not None:
            bar.total = self.total_steps
            bar.update(1)
        if self._checkpoint_due() and self.batch < self.steps_per_epoch:
            self._save_last(start)

    def _selfplay_event(self, bar: Any) -> None:
        now = time.monotonic()
        rate = (self.counts["positions"] - self._since["positions"]) / max(1e-9, now - self._since["at"])
        means = {name: float(np.mean([f[name] for f in self._window])) for name in self.FIGURES}
        stats = self.inferencer.stats()
        figures = {**means, "games": self.counts["games"], "positions_per_s": rate,
                   "mean_batch": stats["mean_batch"], "restarts": self.pool.restarts}
        self._emit({"type": "step", "step": self.step, "epoch": self.epoch, **figures,
                    "lr": self.optimizer.param_groups[0]["lr"], "total_steps": self.total_steps, "eta": self._eta()})
        if bar is not None:
            bar.set_postfix(loss=f"{means['loss']:.3f}", games=self.counts["games"],
                            pos_s=f"{rate:.0f}", batch=f"{stats['mean_batch']:.1f}", refresh=False)
        self._window = []
        self._since = {"at": now, "positions": self.counts["positions"]}

    def _worker_restarted(self, index: int, exitcode: int | None) -> None:
        self._emit({"type": "worker", "worker": index, "exitcode": exitcode, "restarts": self.pool.restarts,
                    "message": f"self-play worker {index} died (exit code {exitcode}) and was started again"})

    def _served_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def _served_copy(self) -> GraphModel:
        """The model as the Inferencer takes it: its graph and the current weights."""
        served = compile(self.network)
        served.load_state_dict(self._served_state())
        return served

    # ------------------------------------------------------------------ epochs: scores against fixed opponents
    def _train_figures(self) -> dict[str, float]:
        count = max(1, self.partial["count"])
        return {name: self.partial[name] / count for name in self.FIGURES} | {
            "games": self.counts["games"], "positions": self.counts["positions"]}

    def evaluate(self) -> dict[str, float]:
        """The score (wins + draws / 2 per game) of the current weights against each fixed opponent."""
        self.model.eval()
        agent = self._search(play_search(self.config.simulations))
        scores = {}
        for name, make in opponents(self.game).items():
            result = play_match(agent, make(self.game, self.epoch), self.game, n=self.config.eval_games,
                                seed=self.epoch)
            scores[f"vs_{name}"] = result.score
        self.model.train()
        return scores

    def _score(self, val: dict[str, float]) -> float:
        """What best.pt minimises: minus the mean score against the opponents."""
        return -float(np.mean(list(val.values())))

    def _val_summary(self) -> str:
        val = self.last_metrics.get("val", {})
        return ", ".join(f"{k} {v:.2f}" for k, v in val.items()) or "not evaluated yet"

    def _preview(self) -> None:
        """A game run draws no previews."""

    # ------------------------------------------------------------------ checkpoints
    def _optimizer_states(self) -> dict:
        return super()._optimizer_states() | {"replay": self.buffer.state_dict(), "selfplay": dict(self.counts)}

    def _restore_state(self, state: dict, path: Path) -> None:
        super()._restore_state(state, path)
        self.buffer.load_state_dict(state["replay"])
        self.counts = {key: int(state["selfplay"][key]) for key in self.counts}
