"""``python -m analysis.reproduce``: the command line (see :mod:`analysis.reproduce`)."""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from util.cluster import REPO_ROOT

from . import __doc__ as DESCRIPTION
from .convergence import Convergence
from .experiments import Reproduction
from .medium_report import write_medium_document
from .report import summary, write_document
from .scales import MODELS, SCALES


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.reproduce", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--out", default=None,
                    help="folder for REPRODUCTION.md and reproduction/*.png (default: docs/; "
                         "for --scale smoke: artifacts/reproduction/smoke-docs, so that a "
                         "smoke run never overwrites the published document)")
    ap.add_argument("--cache", default=None,
                    help="measurement cache of a convergence scale (default: "
                         "docs/reproduction/medium/cache for --scale medium, else "
                         "<artifact root>/<scale>/cache)")
    ap.add_argument("--artifact-root", default=str(REPO_ROOT / "artifacts" / "reproduction"),
                    help="where trained models are kept and found again (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: these models are tiny, and on shared "
                         "cores more threads mostly wait for each other)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=None,
                    help="a subset of the four models")
    ap.add_argument("--repeats", nargs="+", type=int, default=None,
                    help="a convergence scale's training repeats to run (default: the scale's); "
                         "with --models, lets two processes share the cores without running "
                         "the same cell twice")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not args.verbose:
        for name in ("util", "data", "analysis.plots", "analysis.results"):
            logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    scale = SCALES[args.scale]
    if args.models:
        scale = replace(scale, models=tuple(args.models))
    if args.repeats:
        if not scale.convergence:
            ap.error(f"--repeats: only for a convergence scale "
                     f"({', '.join(k for k, v in SCALES.items() if v.convergence)}), not "
                     f"{args.scale!r}")
        unknown = sorted(set(args.repeats) - set(scale.repeats))
        if unknown:
            ap.error(f"--repeats: {unknown} not among scale {args.scale!r}'s repeats "
                     f"{list(scale.repeats)}")
        scale = replace(scale, repeats=tuple(r for r in scale.repeats if r in args.repeats))
    published = args.scale in ("small", "full", "medium")
    out = Path(args.out) if args.out else (
        REPO_ROOT / "docs" if published
        else REPO_ROOT / "artifacts" / "reproduction" / f"{args.scale}-docs")
    command = "python -m analysis.reproduce --scale " + args.scale + (
        " --models " + " ".join(args.models) if args.models else "") + (
        " --repeats " + " ".join(map(str, args.repeats)) if args.repeats else "")
    if scale.convergence:
        cache = Path(args.cache) if args.cache else (
            REPO_ROOT / "docs" / "reproduction" / "medium" / "cache" if args.scale == "medium"
            else Path(args.artifact_root) / args.scale / "cache")
        run = Convergence(scale, artifact_root=args.artifact_root, cache_root=cache,
                          device=args.device).run()
        doc = write_medium_document(run, out, command=command,
                                    doc_name=f"REPRODUCTION_{args.scale.replace('-', '_')}.md")
        print(f"wrote {doc} (scale {scale.name}, {run.facts['wall_seconds'] / 60:.1f} min, "
              f"{run.facts['trainings']} models trained)")
        return 0
    rep = Reproduction(scale, artifact_root=args.artifact_root, device=args.device).run()
    doc = write_document(rep, out, command=command)
    print(summary(rep, doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
