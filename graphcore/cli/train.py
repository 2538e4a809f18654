"""``netcanvas train``: the command line over ``graphcore.runtime.train``, with a torchrun relaunch
for ``--nproc K``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from graphcore.cli.arguments import float_between, nonempty_path, positive_float, positive_int, seed
from graphcore.core.diagnostics import GraphError
from graphcore.core.gallery import open_graph
from graphcore.runtime.config import DEFAULT_LR, TASK_DEFAULTS, TASKS, TrainConfig, check_task, guess_task
from graphcore.runtime.data import load_dataset
from graphcore.runtime.games import GAMES
from graphcore.runtime.train import Trainer, check_out_dir, free_run_dir, trainer_class


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", nargs="?", help="graph JSON file or template name (optional with --resume)")
    parser.add_argument("--task", choices=TASKS, help="default: guessed from the graph")
    parser.add_argument("--dataset", help="digits (default); 2-D points: moons, circles, swissroll, gaussians8; "
                                               "a folder of class folders of images, or FILE.npz")
    parser.add_argument("--epochs", type=positive_int,
                        help="epochs in all (default: 10, or until --minutes ends; with --resume: the new total)")
    parser.add_argument("--minutes", type=positive_float,
                        help="time budget: without --epochs, train until it ends; the lr schedule ends with it")
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--lr", type=positive_float)
    parser.add_argument("--optimizer", choices=sorted(DEFAULT_LR))
    parser.add_argument("--seed", type=seed)
    parser.add_argument("--resume", type=nonempty_path, metavar="RUN_DIR", help="continue this run where it stopped")
    parser.add_argument("--init", type=nonempty_path, metavar="W.pt",
                        help="start from these weights (a state_dict or a run's best.pt / last.pt): fine-tuning")
    parser.add_argument("--checkpoint-minutes", type=positive_float,
                        help="also save last.pt this often inside an epoch (default 2): what a crash can lose")
    parser.add_argument("--r1-gamma", type=float_between(0.0, 1000.0),
                        help="gan: weight of the R1 penalty on the discriminator (default 0.1; 0: none)")
    parser.add_argument("--style-mixing", type=float_between(0.0, 1.0),
                        help="gan: probability that a batch mixes two latents' styles (default 0.9; 0: never)")
    parser.add_argument("--nproc", type=positive_int, default=1,
                        help="processes (DistributedDataParallel under torchrun)")
    parser.add_argument("--device", help="auto (default): CUDA, then MPS, then CPU")
    parser.add_argument("--game", choices=sorted(GAMES),
                        help="alphazero, muzero: the game to learn (default: the one the graph's meta names)")
    parser.add_argument("--workers", type=positive_int, help="alphazero, muzero: self-play processes (default 2)")
    parser.add_argument("--simulations", type=positive_int,
                        help="alphazero, muzero: MCTS simulations per move (default 50)")
    parser.add_argument("--unroll-steps", type=positive_int,
                        help="muzero: steps unrolled through the dynamics in training (default 5)")
    parser.add_argument("--td-steps", type=positive_int,
                        help="muzero: rewards in a value target before it bootstraps (default 9)")
    parser.add_argument("--out", type=nonempty_path,
                        help="run folder (default runs/GRAPH_NAME): new, empty, or a run with no checkpoint yet")


CONFIG_OPTIONS = ("dataset", "epochs", "minutes", "batch_size", "lr", "optimizer", "seed", "device", "init",
                  "checkpoint_minutes", "game", "workers", "simulations", "r1_gamma", "style_mixing", "unroll_steps",
                  "td_steps")
"""The arguments that go into the run's ``TrainConfig`` as they are."""
_FIXED_ON_RESUME = ("task", "dataset", "batch_size", "lr", "optimizer", "seed", "init", "game", "r1_gamma",
                    "style_mixing", "unroll_steps", "td_steps")


def task_settings(task: str) -> dict:
    """The task's own settings that the Train panel starts from (``TASK_DEFAULTS``: an AlphaZero run's
    lr, weight decay and constant schedule, a GAN's batch and lr), so that a run from the command line
    trains as one from the editor; its budget is the command line's own (10 epochs unless given)."""
    return {key: value for key, value in TASK_DEFAULTS.get(task, {}).items() if key not in ("epochs", "minutes")}


def train_command(args: argparse.Namespace) -> int:
    """``netcanvas train``: prints one line at the end; exit 1 on a NaN loss."""
    rank = int(os.environ.get("RANK", 0))
    if args.resume:
        trainer = _resume_from_args(args)
    else:
        if not args.graph:
            raise GraphError("name a graph to train (a JSON file or a template), or --resume a run")
        doc = open_graph(args.graph)
        options = {name: getattr(args, name) for name in CONFIG_OPTIONS}
        options = {k: v for k, v in options.items() if v is not None}
        task = args.task or guess_task(doc)
        config = TrainConfig(task=task, **(task_settings(task) | options))
        if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
            shape = check_task(doc, config.task).sample_shape(config.task)
            check_task(doc, config.task, load_dataset(config.dataset, shape, val_fraction=config.val_fraction))
            out = Path(args.out) if args.out else free_run_dir(doc.name)
            check_out_dir(out)  # here, before the processes start, so that one line says it
            return _relaunch(args, str(out))
        trainer = trainer_class(config.task)(doc, config, out=args.out, progress=True)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch(args, args.resume)
    try:
        result = trainer.fit()
    except GraphError:
        if rank != 0:
            return 1  # rank 0 says it
        raise
    if rank == 0:
        print(result.message)
    return 1 if result.status == "nan" else 0


def _resume_from_args(args: argparse.Namespace) -> Trainer:
    run_dir = Path(args.resume)
    trainer = Trainer.resume(run_dir, epochs=args.epochs, minutes=args.minutes, device=args.device, progress=True)
    for name in _FIXED_ON_RESUME:
        given = getattr(args, name)
        if given is not None and given != getattr(trainer.config, name):
            raise GraphError(f"--{name.replace('_', '-')} cannot change when resuming "
                             f"(the run has {getattr(trainer.config, name)!r})")
    if args.graph:
        given = open_graph(args.graph)
        if (given.nodes, given.edges, given.subgraphs) != (trainer.doc.nodes, trainer.doc.edges, trainer.doc.subgraphs):
            raise GraphError(f"{args.graph}: this graph differs from the run's graph.json; "
                             f"resume without naming a graph, or start a new run")
    if args.out and Path(args.out) != run_dir:
        raise GraphError("--out cannot differ from --resume: a resumed run continues in its own folder")
    return trainer


def _relaunch(args: argparse.Namespace, out: str) -> int:
    """Run this same command under torchrun with ``--nproc`` processes (DDP)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "graphcore.cli", "train"]
    if args.graph:
        command.append(args.graph)
    for name in ("task", *CONFIG_OPTIONS, "resume"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    if not args.resume:
        command += ["--out", out]
    return 0 if subprocess.run(command).returncode == 0 else 1
