"""The command line: ``prepare`` (here), ``run`` (here on tiny models, or on the GPU
machine), ``install-wheels`` (a part of the workflow's wheelhouse, on the GPU machine)
and ``hold-slot`` (check 6's child processes). Run from the repo root:
``python -m bench.gpu_check --help``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import __doc__ as package_doc
from .common import CHECKS, MODELS, REPO, log
from .kit import install_command, prepare_kit, unmet_requirements, unpack_wheelhouse
from .runner import cmd_run
from .slots import hold_slot

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description=package_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="write the kit (tokenizer, wheels); run it here")
    prep.add_argument("--out", default=str(REPO / "bench/out/gpu_kit"))
    prep.add_argument("--no-wheels", action="store_true", help="tokenizer only")
    prep.add_argument(
        "--workflow",
        action="store_true",
        help="also check 11's wheelhouse (the workflow's packages, in parts of one call each)",
    )
    run = sub.add_parser("run", help="run the checks")
    run.add_argument("--tokenizer", default=str(REPO / "bench/out/gpu_kit/tokenizer"))
    run.add_argument("--out", required=True, help="folder for gpu_check.json and .txt")
    run.add_argument("--wheels", help="wheels to put on sys.path when not installed")
    run.add_argument("--tiny", action="store_true", help="tiny models (the default without CUDA)")
    run.add_argument("--models", nargs="+", choices=sorted(MODELS))
    run.add_argument("--only", help=f"comma-separated subset of {','.join(CHECKS)}")
    run.add_argument("--contexts", type=int, help="contexts (4 requests each)")
    run.add_argument("--token-budget", type=int)
    inst = sub.add_parser("install-wheels", help="install the workflow's wheelhouse, offline")
    inst.add_argument("wheelhouse", help="the folder holding its part-<i> folders")
    inst.add_argument("--target", required=True, help="the folder to put on PYTHONPATH")
    hold = sub.add_parser("hold-slot", help=argparse.SUPPRESS)  # check 6's child processes
    hold.add_argument("--lock-dir", required=True)
    hold.add_argument("--local-gpus", required=True)
    hold.add_argument("--seconds", type=float, default=1.0)
    hold.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # this script's progress; the libraries' warnings only
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a line per int8 matmul
    if args.cmd == "prepare":
        kit = prepare_kit(Path(args.out), wheels=not args.no_wheels, workflow=args.workflow)
        for name, size in kit["files"].items():
            if not name.startswith("workflow/"):
                print(f"{size / 2**20:8.2f} MiB  {name}")
        print(f"{kit['bytes'] / 2**20:8.2f} MiB  (a device call carries 64 MiB with the tree)")
        for part in kit.get("workflow_parts", []):
            print(f"{part['bytes'] / 2**20:8.2f} MiB  workflow/{part['folder']}: one call each")
        return 0
    if args.cmd == "install-wheels":
        with tempfile.TemporaryDirectory() as tmp:
            wheels = unpack_wheelhouse(Path(args.wheelhouse), Path(tmp))
            done = subprocess.run(install_command(wheels, Path(args.target)))
        if done.returncode == 0:
            for line in unmet_requirements(Path(args.target)):
                print(f"warning: {line}")
        return done.returncode
    if args.cmd == "hold-slot":
        print(json.dumps(hold_slot(args.lock_dir, args.local_gpus, args.seconds, args.cuda)))
        return 0
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
