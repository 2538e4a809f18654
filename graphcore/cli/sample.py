"""``netcanvas sample RUN_DIR --sampler ddim --steps 50``: samples from a diffusion or GAN run into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from graphcore.cli.arguments import float_between, int_between, nonempty_path, positive_int, seed, usage_error
from graphcore.runtime import diffusion
from graphcore.runtime.config import read_config
from graphcore.runtime.sample import sample_run


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=nonempty_path, metavar="RUN_DIR", help="a diffusion or GAN run folder (runs/NAME)")
    parser.add_argument("--sampler", choices=sorted(diffusion.SAMPLERS), default="ddim")
    parser.add_argument("--steps", type=positive_int, default=50,
                        help="denoising steps (at most the training timesteps)")
    parser.add_argument("--n", type=positive_int, default=64, help="number of samples")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--out", type=nonempty_path, default=None,
                        help="output folder (default: a new RUN_DIR/samples/STAMP, STAMP the UTC time)")
    parser.add_argument("--checkpoint", choices=["last", "best"], default="last")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="video graphs: clip length, longer than the graph's")
    parser.add_argument("--overlap", type=positive_int, default=2, help="video graphs: frames shared between chunks")
    parser.add_argument("--psi", type=float_between(0.0, 1.0), default=1.0,
                        help="GAN runs: truncation, 0-1: pull the styles towards the mean (1: none, 0: the mean image)")
    parser.add_argument("--interpolate", type=int_between(2, 64), metavar="FRAMES",
                        help="in place of --n samples, FRAMES images along the path from --seed to --seed + 1 "
                             "(GAN: a line in W; diffusion: the slerp between the noises)")


def sample_command(args: argparse.Namespace) -> int:
    config = read_config(Path(args.run) / "config.json")
    if config.task != "gan" and args.steps > config.timesteps:  # depends on the run: argparse cannot check it
        raise usage_error(f"argument --steps: at most the run's {config.timesteps} timesteps, got {args.steps}")
    result = sample_run(args.run, args.out, sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed,
                        checkpoint=args.checkpoint, device=args.device, frames=args.frames, overlap=args.overlap,
                        psi=args.psi, interpolate=args.interpolate)
    print(f"wrote {', '.join(str(f) for f in result.files)} ({result.samples.shape[0]} samples) in {result.folder}")
    return 0
