"""Monte Carlo tree search as in AlphaZero (over the game's rules) and MuZero (over a learned model).

    search = AlphaZeroSearch(game, evaluate, SearchConfig(simulations=200), seed=0)
    result = search.run(state)            # visit counts at the root, the root's value
    move = search(state)                  # a search is an agent: the move by the temperature schedule

``evaluate(planes) -> (policy_logits, value)`` takes a batch (B, 3, rows, cols) and answers
(B, num_moves) logits and (B,) or (B, 1) values, from the side to move's view; a local model or an
Inferencer client (``Inferencer.create_client()``) both fit. Leaves are evaluated ``leaf_batch`` at a
time: a leaf waiting for its evaluation carries a virtual loss, so the next descents spread out.
``search.select_move_steps(state)`` is the same search as a generator that yields each batch of planes
and takes its evaluation back (``Steps``): a self-play worker interleaves several games with it.

A MuZero model answers ``initial_inference(planes) -> (hidden, policy_logits, value)`` and
``recurrent_inference(hidden, actions) -> (hidden, reward, policy_logits, value)`` on batches
(actions an int64 tensor (B,)). Only the root's moves are masked to the legal ones; the tree's
values are normalised by the min and max seen so far. Turns alternate at every level: a reward is
the mover's, a value the side to move's.

Every node stores the value of the move that led to it, from the view of the player who made it;
the root's ``value_sum`` is thus minus its own value. A search is deterministic for its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import torch

from graphcore.runtime.games import Game, GameError, State

Evaluate = Callable[[torch.Tensor], tuple[Any, Any]]
T = TypeVar("T")
Steps = Generator[Any, Any, T]
"""A search in steps: it yields each evaluation it needs (a request) and takes its answer back, so that
a caller may answer the requests of several searches in one call (``_Search.complete`` answers them one
at a time)."""


class MuZeroModel(Protocol):
    """What the MuZero search needs of a learned model (batched; any array-like outputs)."""

    def initial_inference(self, planes: torch.Tensor) -> tuple[Any, Any, Any]: ...

    def recurrent_inference(self, hidden: torch.Tensor, actions: torch.Tensor) -> tuple[Any, Any, Any, Any]: ...


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs and how it picks its move."""

    simulations: int = 100
    c_puct: float = 1.25  # weight of the prior against the mean value
    dirichlet_alpha: float = 0.3  # root noise concentration (about 10 / typical number of moves)
    noise_fraction: float = 0.25  # share of the root prior replaced by noise; 0 for play and evaluation
    temperatures: tuple[tuple[int, float], ...] = ((0, 1.0), (8, 0.0))  # (from move number, temperature)
    leaf_batch: int = 8  # leaves evaluated per call
    virtual_loss: float = 1.0  # a pending leaf counts as this loss for the player moving into it
    discount: float = 1.0  # MuZero: of the value after a reward

    def __post_init__(self) -> None:
        checks = {
            "simulations must be at least 1": self.simulations >= 1,
            "c_puct must be positive": self.c_puct > 0,
            "dirichlet_alpha must be positive": self.dirichlet_alpha > 0,
            "noise_fraction must be in [0, 1]": 0 <= self.noise_fraction <= 1,
            "leaf_batch must be at least 1": self.leaf_batch >= 1,
            "virtual_loss must not be negative": self.virtual_loss >= 0,
            "discount must be in (0, 1]": 0 < self.discount <= 1,
            "temperatures must start at move 0, ascend, and be >= 0": bool(self.temperatures)
            and self.temperatures[0][0] == 0
            and all(a[0] < b[0] for a, b in zip(self.temperatures, self.temperatures[1:]))
            and all(t >= 0 for _, t in self.temperatures),
        }
        failed = [text for text, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"search config: {failed[0]}")

    def temperature(self, move_number: int) -> float:
        """The temperature of the last schedule step at or before ``move_number``."""
        return next(t for start, t in reversed(self.temperatures) if start <= move_number)


@dataclass(frozen=True)
class SearchResult:
    """The root after a search: visits per move (num_moves,), and its value for the side to move."""

    visits: np.ndarray
    value: float

    def policy(self, temperature: float) -> np.ndarray:
        """Visit counts as move probabilities: counts^(1/T) normalised; T = 0 puts all on the most visited."""
        if temperature == 0:
            policy = np.zeros(len(self.visits))
            policy[int(np.argmax(self.visits))] = 1.0
            return policy
        scaled = (self.visits / self.visits.max()) ** (1.0 / temperature)  # divided first: no overflow
        return scaled / scaled.sum()


class _Node:
    """A position in the tree, reached by ``move`` from its parent."""

    __slots__ = ("move", "prior", "visits", "value_sum", "reward", "children", "state", "hidden", "pending")

    def __init__(self, move: int, prior: float) -> None:
        self.move = move
        self.prior = prior
        self.visits = 0
        self.value_sum = 0.0  # of the move into this node, for the player who made it
        self.reward = 0.0  # MuZero: the mover's reward for that move
        self.children: dict[int, _Node] | None = None  # None until expanded
        self.state: State | None = None  # AlphaZero: set when first visited
        self.hidden: torch.Tensor | None = None  # MuZero: set when expanded
        self.pending = False  # selected in this batch, waiting for its evaluation

    def expand(self, moves: list[int], logits: np.ndarray) -> None:
        """Children for ``moves`` with the softmax of their logits as priors."""
        weights = np.exp(logits[moves] - logits[moves].max())  # (len(moves),) shifted: no overflow
        priors = weights / weights.sum()
        self.children = {m: _Node(m, float(p)) for m, p in zip(moves, priors)}


class _Bounds:
    """Min-max normalisation of values seen in the tree (MuZero); identity until two values differ."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf

    def update(self, value: float) -> None:
        self.low, self.high = min(self.low, value), max(self.high, value)

    def normalize(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low) if self.high > self.low else value


class _Unscaled(_Bounds):
    """AlphaZero's values are already in [-1, 1]."""

    def update(self, value: float) -> None:
        pass

    def normalize(self, value: float) -> float:
        return value


def as_numpy(value: Any) -> np.ndarray:
    """A tensor or array-like as a float32 numpy array (on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _per_row(value: Any, rows: int) -> np.ndarray:
    return as_numpy(value).reshape(rows)  # (B,) from (B,) or (B, 1)


class _Search:
    """PUCT search with batched leaf evaluation; a subclass says how leaves are reached and evaluated."""

    normalized = False

    def __init__(self, game: Game, config: SearchConfig, seed: int) -> None:
        self.game, self.config = game, config
        self.rng = np.random.default_rng(seed)

    def __call__(self, state: State) -> int:
        return self.select_move(state)[0]

    def select_move(self, state: State) -> tuple[int, SearchResult]:
        """Searches ``state`` and draws a move from the visits at the schedule's temperature."""
        return self.complete(self.select_move_steps(state))

    def select_move_steps(self, state: State) -> Steps[tuple[int, SearchResult]]:
        """``select_move`` in steps (see ``Steps``)."""
        result = yield from self.run_steps(state)
        policy = result.policy(self.config.temperature(self.game.move_number(state)))
        return int(self.rng.choice(len(policy), p=policy)), result

    def run(self, state: State) -> SearchResult:
        """Runs the configured simulations from ``state``; GameError if the game is over."""
        return self.complete(self.run_steps(state))

    def complete(self, steps: Steps[T]) -> T:
        """Runs ``steps`` to its end, answering each of its requests with ``answer``."""
        try:
            request = next(steps)
            while True:
                request = steps.send(self.answer(request))
        except StopIteration as done:
            return done.value

    def run_steps(self, state: State) -> Steps[SearchResult]:
        """``run`` in steps (see ``Steps``)."""
        if state.outcome is not None:
            raise GameError(f"{self.game.name}: the game is over; there is no move to search")
        bounds = _Bounds() if self.normalized else _Unscaled()
        root = _Node(-1, 1.0)
        root.state = state
        self._backup([root], (yield from self._expand_root(root, state)), bounds)
        if self.config.noise_fraction > 0:
            self._add_noise(root)
        yield from self._simulate(root, bounds)
        visits = np.zeros(self.game.num_moves)
        for move, child in (root.children or {}).items():
            visits[move] = child.visits
        return SearchResult(visits, -root.value_sum / root.visits)

    def _add_noise(self, root: _Node) -> None:
        children = list((root.children or {}).values())
        noise = self.rng.dirichlet([self.config.dirichlet_alpha] * len(children))
        f = self.config.noise_fraction
        for child, eta in zip(children, noise):
            child.prior = (1 - f) * child.prior + f * float(eta)

    def _simulate(self, root: _Node, bounds: _Bounds) -> Steps[None]:
        done = 0
        while done < self.config.simulations:
            waiting: list[list[_Node]] = []
            while done < self.config.simulations and len(waiting) < self.config.leaf_batch:
                path = self._descend(root, bounds)
                if path[-1].pending:  # this batch already waits on that leaf: evaluate what we have
                    break
                done += 1
                value = self._terminal_value(path[-1])
                if value is not None:
                    self._backup(path, value, bounds)
                else:
                    path[-1].pending = True
                    self._virtual_loss(path, +1)
                    waiting.append(path)
            if waiting:
                values = yield from self._expand_leaves(waiting)
                for path, value in zip(waiting, values):
                    path[-1].pending = False
                    self._virtual_loss(path, -1)
                    self._backup(path, value, bounds)

    def _descend(self, root: _Node, bounds: _Bounds) -> list[_Node]:
        path, node = [root], root
        while node.children:
            parent, node = node, self._select_child(node, bounds)
            self._enter(parent, node)
            path.append(node)
        return path

    def _select_child(self, node: _Node, bounds: _Bounds) -> _Node:
        """The child with the highest Q + c_puct · P · sqrt(N) / (1 + n); the first such on ties."""
        assert node.children is not None
        scale = self.config.c_puct * math.sqrt(node.visits)
        best, best_score = None, -math.inf
        for child in node.children.values():
            q = bounds.normalize(child.value_sum / child.visits) if child.visits else 0.0
            score = q + scale * child.prior / (1 + child.visits)
            if score > best_score:
                best, best_score = child, score
        assert best is not None
        return best

    def _virtual_loss(self, path: list[_Node], sign: int) -> None:
        for node in path[1:]:
            node.visits += sign
            node.value_sum -= sign * self.config.virtual_loss

    def _backup(self, path: list[_Node], value: float, bounds: _Bounds) -> None:
        """``value`` is the leaf's, for its side to move; each node up the path gets its mover's view."""
        for node in reversed(path[1:]):
            value = node.reward - self.config.discount * value  # the mover's: reward, then the opponent's value
            node.value_sum += value
            node.visits += 1
            bounds.update(value)
        path[0].value_sum -= value  # the root's own value, negated like every node's (no move led to it)
        path[0].visits += 1

    # -- what a variant supplies ---------------------------------------------------------------------

    def answer(self, request: Any) -> Any:
        """The evaluation a request of this search's steps asks for."""
        raise NotImplementedError

    def _expand_root(self, root: _Node, state: State) -> Steps[float]:
        raise NotImplementedError

    def _enter(self, parent: _Node, child: _Node) -> None:
        """Called as the descent steps from ``parent`` into ``child``."""

    def _terminal_value(self, leaf: _Node) -> float | None:
        """The leaf's value if the game is over there (no evaluation needed), else None."""
        return None

    def _expand_leaves(self, paths: list[list[_Node]]) -> Steps[list[float]]:
        """Evaluates the leaves ending ``paths`` in one request, expands them, returns their values."""
        raise NotImplementedError


class AlphaZeroSearch(_Search):
    """PUCT over the game's rules, leaves evaluated by ``evaluate``; terminal positions score exactly."""

    def __init__(self, game: Game, evaluate: Evaluate, config: SearchConfig | None = None, seed: int = 0) -> None:
        super().__init__(game, config or SearchConfig(), seed)
        self.evaluate = evaluate

    def answer(self, request: torch.Tensor) -> tuple[Any, Any]:
        """A request is a batch of planes (B, 3, H, W), answered by ``evaluate``."""
        return self.evaluate(request)

    def _expand_root(self, root: _Node, state: State) -> Steps[float]:
        return (yield from self._evaluate_states([root]))[0]

    def _enter(self, parent: _Node, child: _Node) -> None:
        if child.state is None:
            assert parent.state is not None
            child.state = self.game.play(parent.state, child.move)

    def _terminal_value(self, leaf: _Node) -> float | None:
        assert leaf.state is not None
        outcome = leaf.state.outcome
        return None if outcome is None else float(outcome * leaf.state.to_play)

    def _expand_leaves(self, paths: list[list[_Node]]) -> Steps[list[float]]:
        return (yield from self._evaluate_states([path[-1] for path in paths]))

    def _evaluate_states(self, nodes: list[_Node]) -> Steps[list[float]]:
        states = [cast(State, node.state) for node in nodes]  # set on entering each node
        planes = torch.stack([self.game.encode(s) for s in states])  # (B, 3, H, W)
        logits, values = yield planes
        logits = as_numpy(logits).reshape(len(nodes), self.game.num_moves)  # (B, A)
        for node, state, row in zip(nodes, states, logits):
            node.expand(self.game.legal_moves(state), row)
        return [float(v) for v in _per_row(values, len(nodes))]


class MuZeroSearch(_Search):
    """PUCT over a learned model's hidden states; the root's moves masked to the legal ones."""

    normalized = True

    def __init__(self, game: Game, model: MuZeroModel, config: SearchConfig | None = None, seed: int = 0) -> None:
        super().__init__(game, config or SearchConfig(), seed)
        self.model = model

    def answer(self, request: tuple[str, tuple]) -> Any:
        """A request names the model's method and its arguments."""
        method, args = request
        return getattr(self.model, method)(*args)

    def _expand_root(self, root: _Node, state: State) -> Steps[float]:
        hidden, logits, value = yield "initial_inference", (self.game.encode(state)[None],)  # (1, 3, H, W)
        root.hidden = torch.as_tensor(hidden)[0]
        root.expand(self.game.legal_moves(state), as_numpy(logits).reshape(self.game.num_moves))
        return float(_per_row(value, 1)[0])

    def _expand_leaves(self, paths: list[list[_Node]]) -> Steps[list[float]]:
        parents = [path[-2] for path in paths]
        hidden = torch.stack([cast(torch.Tensor, p.hidden) for p in parents])  # (B, ...) set on expanding
        actions = torch.tensor([path[-1].move for path in paths], dtype=torch.int64)  # (B,)
        next_hidden, rewards, logits, values = yield "recurrent_inference", (hidden, actions)
        next_hidden = torch.as_tensor(next_hidden)
        rewards = _per_row(rewards, len(paths))
        logits = as_numpy(logits).reshape(len(paths), self.game.num_moves)  # (B, A)
        every_move = list(range(self.game.num_moves))
        for i, path in enumerate(paths):
            leaf = path[-1]
            leaf.hidden, leaf.reward = next_hidden[i], float(rewards[i])
            leaf.expand(every_move, logits[i])
        return [float(v) for v in _per_row(values, len(paths))]
