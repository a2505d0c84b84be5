"""`python -m harness.export`: a finished job's final weights as a `.safetensors` file, to use as
a teacher elsewhere (`[teachers.NAME] checkpoint = "..."`) or to ship. The header's metadata says
where the weights came from: architecture, job key, grid, seed, test top-1, harness commit."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from harness.cli import refusing_unreadable
from harness.data import datasets
from harness.models import checkpoint
from harness.models import build_model
from harness.run.layout import JobPaths, State


def export(folder: Path, out: Path) -> dict[str, str]:
    paths = JobPaths(folder)
    spec = paths.read_spec()
    result = json.loads(paths.result.read_text())  # raises where there is none: nothing to export
    if result.get("status") != State.COMPLETED:
        raise ValueError(f"{folder}: the job is {result.get('status')!r}, not completed")
    arch, dataset = spec["config"]["arch"], spec["config"]["data"].get("dataset", datasets.DEFAULT)
    model = build_model(arch, datasets.get(dataset).num_classes)
    model.load_state_dict(checkpoint.read_state(paths.model))
    metadata = {"job_key": spec["key"], "dataset": dataset, "seed": str(spec["seed"]), "test_top1": f"{result['test_top1']:.2f}",
                "git_commit": str(result.get("git_commit")), "epochs": str(spec["config"]["recipe"]["epochs"])}
    checkpoint.save_safetensors(out, arch, model, metadata)
    return {"arch": arch, **metadata}


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__)
    parser.add_argument("folder", type=Path, help="a completed job's folder, results/<grid>/jobs/<key>")
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        print(f"error: {args.out}: the file name must end in .safetensors", file=sys.stderr)
        return 2
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: {args.out}: cannot write there ({args.out.parent}: {e.strerror})", file=sys.stderr)
        return 2
    try:
        metadata = export(args.folder, args.out)
    except FileNotFoundError as e:
        if Path(e.filename or "").parent != args.folder:  # the output's temporary file: no folder to write in
            print(f"error: {args.out}: cannot write there ({e.strerror})", file=sys.stderr)
        else:  # the folder's job.json, result.json or model.pt
            print(f"error: {args.folder}: no {Path(e.filename).name}: expected a completed job's folder, "
                  "results/<grid>/jobs/<key>", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): " + ", ".join(f"{k} {v}" for k, v in metadata.items()))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
