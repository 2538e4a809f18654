"""AlphaZero and MuZero by self-play, as a user trains them, then measured against fixed opponents; and
self-play throughput with the batching Inferencer against the same workers each calling its own model.

    .venv/bin/python benchmarks/bench_selfplay.py [--only tictactoe|connect4|muzero|throughput]
        [--ttt-minutes 10] [--c4-minutes 30] [--mz-minutes 15] [--seconds 60] [--workers 2] [--tp-workers 4]
        [--tp-games 8] [--tp-max-batch 32] [--tp-instances 1] [--simulations 100] [--keep DIR]

``tictactoe``: the README's line ``netcanvas train alphazero_tictactoe --task alphazero …``, run as
written in a scratch folder (its ``--minutes`` replaced by ``--ttt-minutes``, default 10: the same),
then its agent (``gc.load_agent``, MCTS with ``--simulations`` per move, no noise) plays 100 games
against the perfect player (50 as each side) and 100 against the random one. Goal: no loss against
perfect play, >= 95 % wins against random. Also printed: the agent's exact chances against uniformly
random play (every random reply followed; no sampling), and the most wins a player that never loses
can expect there (95.6 %, half as each side): 100 games of such a player give 95 or more wins
about 7 times in 10.

``connect4``: ``alphazero_connect4`` for ``--c4-minutes``, then 100 games against random and 100
against a depth-2 minimax (each game opens with two random plies so that the deterministic players
meet in different positions). Goal: >= 90 % wins against random, >= 60 % against minimax.

``muzero``: the README's line ``netcanvas train muzero_tictactoe --task muzero …``, run as written in
a scratch folder (its ``--minutes`` replaced by ``--mz-minutes``, default 15: the same), then its agent
(MuZero's search over its learned model, ``--simulations`` per move) plays 100 games against random
and 100 against the perfect player (50 as each side). Goal: >= 90 % wins against random, <= 10 %
losses against perfect play. The exact chances against random play are printed as for tic-tac-toe.

``throughput``: self-play processes (the tic-tac-toe and connect4 templates, untrained, self-play
search) for ``--seconds`` each way: leaves evaluated by one Inferencer (batched across the workers,
``--tp-instances`` batches at once), then by a copy of the model in each worker (``LocalEvaluator``).
Two setups: ``--tp-workers`` (4) processes playing ``--tp-games`` (8) games at once, one leaf per game
at a time (through the Inferencer each worker sends its games' leaves as one request and searches on
while it is evaluated; with its own model it evaluates each leaf alone: the issue's "unbatched"
workers); and the training setup (``--workers``, ``SelfPlayTrainer.GAMES_AT_ONCE`` games at a time in
each, 8 leaves a game a request, batched within each worker both ways). Figures: positions per second
each way, their ratio (goal >= 2x), and the Inferencer's mean batch size. No timed asserts: the figures
are printed with the load average (the machine may be shared: wall-time figures are then pessimistic).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_diffusion import readme_lines, with_minutes

import graphcore as gc
from graphcore.runtime.config import task_config
from graphcore.runtime.games import GAMES, Game, O, X
from graphcore.runtime.games.opponents import (
    best_wins_vs_random,
    expected_vs_random,
    minimax_agent,
    perfect_agent,
    play_match,
    random_agent,
)
from graphcore.runtime.mcts import Evaluate, SearchConfig
from graphcore.runtime.selfplay import LocalEvaluator, SelfPlayTrainer, WorkerPool, selfplay_search
from graphcore.runtime.serving import Inferencer
from graphcore.runtime.train import train

GAMES_PER_MATCH = 100
README_TRAIN = "netcanvas train alphazero_tictactoe"
README_MUZERO = "netcanvas train muzero_tictactoe"
SIMULATIONS = 50  # per move in the throughput runs


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def trained_agent(template: str, minutes: float, out: Path, args: argparse.Namespace) -> gc.GameAgent:
    """``template`` trained by self-play for ``minutes`` (the Train panel's alphazero defaults)."""
    config = task_config("alphazero", minutes=minutes, workers=args.workers, device=args.device)
    began = time.monotonic()
    result = train(template, config, out=out, progress=True)
    print(f"  trained {result.step} steps in {time.monotonic() - began:.0f} s: {result.message}  (load {load()})")
    return gc.load_agent(out, simulations=args.simulations)


def match(name: str, agent, opponent, game: Game, random_plies: int = 0) -> float:
    """Prints the agent's record against ``opponent`` over ``GAMES_PER_MATCH`` games; its win share."""
    began = time.monotonic()
    result = play_match(agent, opponent, game, n=GAMES_PER_MATCH, seed=1, random_plies=random_plies)
    print(f"  vs {name:<10} won {result.wins:3d}, drew {result.draws:3d}, lost {result.losses:3d} "
          f"(score {result.score:.2f}; {time.monotonic() - began:.0f} s, load {load()})")
    return result.wins / result.games


def exact_vs_random(agent: gc.GameAgent, game: Game) -> None:
    """Prints the agent's exact chances against uniformly random play, half the games as each side,
    and the most wins a player that never loses can expect there."""
    began = time.monotonic()
    x, o = (expected_vs_random(agent, game, side) for side in (X, O))
    ceiling = (best_wins_vs_random(game, X) + best_wins_vs_random(game, O)) / 2
    print(f"  vs random, exact: wins {(x.win + o.win) / 2:.1%} (as x {x.win:.1%}, as o {o.win:.1%}), losses "
          f"{(x.loss + o.loss) / 2:.1%}; a player that never loses: at most {ceiling:.1%} wins "
          f"({time.monotonic() - began:.0f} s)")


def readme_trained_agent(start: str, minutes: float, scratch: Path, args: argparse.Namespace) -> gc.GameAgent:
    """The README's line that begins with ``start``, run as written in ``scratch`` (its budget: ``minutes``);
    the agent of its run."""
    [argv] = readme_lines((start,))
    argv = with_minutes(argv, minutes)
    print("$", shlex.join(argv), flush=True)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "graphcore.cli", *argv[1:]], cwd=scratch, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    print(f"  {done.stdout.strip().splitlines()[-1]} ({time.monotonic() - began:.0f} s, load {load()})", flush=True)
    return gc.load_agent(scratch / argv[argv.index("--out") + 1], simulations=args.simulations)


def bench_tictactoe(args: argparse.Namespace, scratch: Path) -> None:
    game = GAMES["tictactoe"]
    print(f"tictactoe: alphazero_tictactoe, {args.ttt_minutes:g} min of self-play (README.md's line)")
    agent = readme_trained_agent(README_TRAIN, args.ttt_minutes, scratch, args)
    began = time.monotonic()
    perfect = play_match(agent, perfect_agent(game, seed=1), game, n=GAMES_PER_MATCH, seed=1)
    print(f"  vs perfect    won {perfect.wins:3d}, drew {perfect.draws:3d}, lost {perfect.losses:3d} "
          f"({time.monotonic() - began:.0f} s)   goal: lost 0 -> {'met' if perfect.losses == 0 else 'NOT met'}")
    wins = match("random", agent, random_agent(game, seed=1), game)
    exact_vs_random(agent, game)
    print(f"  goal: >= 95 % wins vs random -> {'met' if wins >= 0.95 else 'NOT met'} ({wins:.0%})")


def bench_connect4(args: argparse.Namespace, scratch: Path) -> None:
    game = GAMES["connect4"]
    print(f"connect4: alphazero_connect4, {args.c4_minutes:g} min of self-play, {args.workers} workers")
    agent = trained_agent("alphazero_connect4", args.c4_minutes, scratch / "connect4", args)
    vs_random = match("random", agent, random_agent(game, seed=1), game, random_plies=2)
    vs_minimax = match("minimax2", agent, minimax_agent(game, 2, seed=1), game, random_plies=2)
    print(f"  goals: >= 90 % wins vs random -> {'met' if vs_random >= 0.9 else 'NOT met'} ({vs_random:.0%}); "
          f">= 60 % vs depth-2 minimax -> {'met' if vs_minimax >= 0.6 else 'NOT met'} ({vs_minimax:.0%})")


def bench_muzero(args: argparse.Namespace, scratch: Path) -> None:
    game = GAMES["tictactoe"]
    print(f"muzero: muzero_tictactoe, {args.mz_minutes:g} min of self-play (README.md's line)")
    agent = readme_trained_agent(README_MUZERO, args.mz_minutes, scratch, args)
    wins = match("random", agent, random_agent(game, seed=1), game)
    exact_vs_random(agent, game)
    began = time.monotonic()
    perfect = play_match(agent, perfect_agent(game, seed=1), game, n=GAMES_PER_MATCH, seed=1)
    losses = perfect.losses / perfect.games
    print(f"  vs perfect    won {perfect.wins:3d}, drew {perfect.draws:3d}, lost {perfect.losses:3d} "
          f"({time.monotonic() - began:.0f} s, load {load()})")
    print(f"  goals: >= 90 % wins vs random -> {'met' if wins >= 0.9 else 'NOT met'} ({wins:.0%}); "
          f"<= 10 % losses vs perfect -> {'met' if losses <= 0.1 else 'NOT met'} ({losses:.0%})")


def positions_per_second(evaluators: Callable[[], Evaluate], game: Game, workers: int, leaf_batch: int,
                         seconds: float, games_at_once: int = 1) -> float:
    """Positions the self-play workers play per second over ``seconds``, timed once every worker has sent a
    game: the processes start (imports on a small machine take seconds each) before anything is timed."""
    search = dataclasses.replace(selfplay_search(game, SIMULATIONS), leaf_batch=leaf_batch)
    with WorkerPool(evaluators, game, search, workers, seed=0, games_at_once=games_at_once) as pool:
        while min(pool.games_by_worker) == 0:
            pool.poll(1.0)
        began, positions = time.monotonic(), 0
        while time.monotonic() - began < seconds:
            positions += sum(record.moves for record in pool.poll(1.0))
        return positions / (time.monotonic() - began)


def bench_throughput(args: argparse.Namespace, scratch: Path) -> None:
    print(f"throughput: self-play workers, {SIMULATIONS} simulations per move, {args.seconds:g} s each way")
    # (workers, games at once in each, leaves per game a request)
    setups = ((args.tp_workers, args.tp_games, 1),
              (args.workers, SelfPlayTrainer.GAMES_AT_ONCE, SearchConfig().leaf_batch))
    for template, game_name in (("alphazero_tictactoe", "tictactoe"), ("alphazero_connect4", "connect4")):
        game, model = GAMES[game_name], gc.compile(gc.template(template)).init(seed=0).eval()
        for workers, games, leaf_batch in setups:
            with Inferencer(model, max_batch=args.tp_max_batch, instances=args.tp_instances) as inferencer:
                served = positions_per_second(inferencer.create_client, game, workers, leaf_batch, args.seconds,
                                              games)
                batch = inferencer.stats()["mean_batch"]
            load_served = load()
            own = positions_per_second(functools.partial(LocalEvaluator, model), game, workers, leaf_batch,
                                       args.seconds, games)
            print(f"  {game_name:<10} {workers} workers x {games} games, {leaf_batch} leaves a game: "
                  f"Inferencer {served:6.1f} positions/s (mean batch {batch:.1f}, load {load_served}); "
                  f"own model per worker {own:6.1f} positions/s (load {load()}); ratio {served / own:.2f}x "
                  f"(goal >= 2x)")


BENCHES = {"tictactoe": bench_tictactoe, "connect4": bench_connect4, "muzero": bench_muzero,
           "throughput": bench_throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHES))
    parser.add_argument("--ttt-minutes", type=float, default=10.0)
    parser.add_argument("--c4-minutes", type=float, default=30.0)
    parser.add_argument("--mz-minutes", type=float, default=15.0, help="muzero: minutes of self-play")
    parser.add_argument("--seconds", type=float, default=60.0, help="throughput: seconds each way")
    parser.add_argument("--workers", type=int, default=2, help="self-play processes in training (and throughput)")
    parser.add_argument("--tp-workers", type=int, default=4, help="throughput: self-play processes")
    parser.add_argument("--tp-games", type=int, default=8,
                        help="throughput: games each process plays at once (one leaf each at a time)")
    parser.add_argument("--tp-max-batch", type=int, default=32,
                        help="throughput: the Inferencer's largest batch (the leaves of all the games)")
    parser.add_argument("--tp-instances", type=int, default=1, help="throughput: the Inferencer's batches at once")
    parser.add_argument("--simulations", type=int, default=100, help="the trained agent's simulations per move")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process in the matches (one: the machine may be shared)")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a scratch folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at the start: {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-selfplay-") as tmp:
        scratch = args.keep or Path(tmp)
        for name, bench in BENCHES.items():
            if args.only in (None, name):
                bench(args, scratch)


if __name__ == "__main__":
    main()
