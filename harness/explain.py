"""`python -m harness.explain results/<grid>/jobs/<key>`: Grad-CAM pictures of a trained job.

    python -m harness.explain results/<grid>/jobs/<key> --images 16            # → <job>/explain.png
    python -m harness.explain results/<grid>/jobs/<key> --split val --cam-class pred --out cams.png

One row per image: the image (true class, student's prediction), the student's Grad-CAM map, and
each teacher's map with the weight MATE-KD gives it for that image (`w`) and its similarity to the
student's map (`cos`). The maps are the ones the method compares (its `cam_size` grid, from the
job's `[methods.mate]` parameters, or mate's defaults for a job of another method), drawn over the
image with bilinear smoothing, each scaled to its own maximum. Teachers run on the clean images
here (what the teacher cache holds), on the CPU or the GPU, in float32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from harness.atomic import UnreadableFile
from harness.cli import positive_int, refusing_unreadable
from harness.run.layout import JobPaths


def load_student(folder: Path, arch: str, device: torch.device, num_classes: int = 10):
    from harness.models import checkpoint
    from harness.models import build_model

    model, paths = build_model(arch, num_classes), JobPaths(folder)
    if paths.model.is_file():
        state = checkpoint.read_state(paths.model)
    elif paths.checkpoint.is_file():  # an unfinished job: its last completed epoch
        try:
            student = checkpoint.load(paths.checkpoint)["student"]
        except UnreadableFile as e:
            raise UnreadableFile(f"{paths.checkpoint}: unreadable ({type(e.__cause__).__name__}); the next launch "
                                 "sets it aside and trains the job again") from None
        state = {k[len("model."):]: v for k, v in student.items() if k.startswith("model.")}
    else:
        raise FileNotFoundError(f"{folder} holds no {paths.model.name} or {paths.checkpoint.name}: "
                                "has the job trained?")
    model.load_state_dict(state)
    return model.requires_grad_(False).eval().to(device)


def compute(folder: Path, n_images: int, split: str, cam_class: str | None, seed: int = 0) -> dict:
    """Images, maps (S × S, normalised), weights and similarities for `n_images` of `split`."""
    from harness.models import checkpoint
    from harness.data import load_dataset
    from harness.data.device import Normalize
    from methods import Batch, Context, Outputs
    from methods.mate import MateKD

    spec = JobPaths(folder).read_spec()
    config, data_cfg = spec["config"], spec["config"]["data"]
    cifar = load_dataset(spec["data_root"], data_cfg.get("dataset", "cifar10"), val_size=data_cfg["val_size"],
                         split_seed=data_cfg["split_seed"], limit_train=data_cfg["limit_train"],
                         limit_test=data_cfg["limit_test"])
    images, labels = getattr(cifar, f"x_{split}"), getattr(cifar, f"y_{split}")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(labels), size=min(n_images, len(labels)), replace=False))
    images, labels = images[pick], labels[pick].astype(np.int64)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    student = load_student(folder, config["arch"], device, cifar.num_classes)
    teachers = [checkpoint.load_frozen(path, arch, device, torch.contiguous_format, cifar.num_classes)
                for arch, path in spec["teachers"]]
    names = spec["teacher_set"].split("+") if teachers else []
    params = {**MateKD.defaults, **config["method"]["params"].get("mate", {}), "teacher_cache": "off"}
    if cam_class:
        params["cam_class"] = cam_class
    x = Normalize(device, cifar.spec.mean, cifar.spec.std)(torch.from_numpy(images).to(device))
    y = torch.from_numpy(labels).to(device)
    with torch.no_grad():
        s_logits, s_feats = student(x, features=True)
        t_outs = [Outputs(*t(x, features=True)) for t in teachers]
    out = {"images": images, "labels": labels, "pred": s_logits.argmax(1).cpu().numpy(), "names": names,
           "classes": cifar.class_names,
           "student_arch": config["arch"], "teacher_archs": [a for a, _ in spec["teachers"]],
           "key": spec["key"], "method": spec["method"], "params": params, "split": split}
    if teachers:
        term = MateKD(Context(student, teachers, teacher_names=names), **params)
        att = term.attribution(Batch(x, y), Outputs(s_logits, s_feats), t_outs)
        size = att.size
        out.update(student_maps=att.student.reshape(-1, size, size).cpu().numpy(),
                   teacher_maps=att.teachers.reshape(len(x), len(teachers), size, size).cpu().numpy(),
                   weights=att.weights.cpu().numpy(), similarity=att.similarity.cpu().numpy())
    else:  # a teacher-free job: the student's own map
        from methods.gradcam import gradcam, normalize

        classes = y if params["cam_class"] == "label" else s_logits.argmax(1)
        maps = gradcam(student, s_feats[-1], classes)
        out.update(student_maps=normalize(maps).reshape(maps.shape).cpu().numpy())
    return out


def draw(info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.atomic import atomic_write_bytes

    rows = len(info["images"])
    k = len(info["names"])
    cols = 2 + k
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.95 * rows + 0.9), squeeze=False, layout="constrained")
    extent = (-0.5, 31.5, 31.5, -0.5)
    headers = ["image", f"student\n{info['student_arch']}"] + [
        f"teacher {n}" + ("" if n == a else f"\n{a}") for n, a in zip(info["names"], info["teacher_archs"])]
    for r in range(rows):
        image = info["images"][r]
        label, pred = info["classes"][info["labels"][r]], info["classes"][info["pred"][r]]
        maps = [info["student_maps"][r]] + ([info["teacher_maps"][r, j] for j in range(k)] if k else [])
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(image, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(headers[c], fontsize=9, fontweight="bold")
            if c == 0:
                ax.set_xlabel(f"{label} → {pred}", fontsize=8, color="black" if label == pred else "crimson")
                continue
            m = maps[c - 1]
            ax.imshow(m / max(float(m.max()), 1e-8), cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=extent,
                      interpolation="bilinear")
            if c >= 2:
                ax.set_xlabel(f"w {info['weights'][r, c - 2]:.2f} · cos {info['similarity'][r, c - 2]:.2f}", fontsize=8)
    p = info["params"]
    weighting = f"weights: {p['weighting']}" + (f" (τ = {p['tau']})" if p["weighting"] != "uniform" else "")
    size = info["student_maps"].shape[-1]
    fig.suptitle(f"Grad-CAM, job {info['key'][:8]} ({info['method']}), {info['split']} images: true → predicted class\n"
                 f"maps of the {'true' if p['cam_class'] == 'label' else 'predicted'} class on the {size}×{size} grid "
                 f"they are compared on, each scaled to its maximum" + (f"\n{weighting}; w: weight, cos: similarity "
                 "to the student's map" if k else ""), fontsize=9)
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a trained job's folder, results/<grid>/jobs/<key>")
    parser.add_argument("--images", type=positive_int, default=16, help="how many images (default 16)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="which images (default test)")
    parser.add_argument("--cam-class", choices=("label", "pred"), help="class the maps explain (default: the job's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of images (default 0)")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <folder>/explain.png)")
    args = parser.parse_args(argv)
    paths = JobPaths(args.folder)
    if not paths.spec.is_file():
        print(f"error: no {paths.spec.name} in {args.folder}", file=sys.stderr)
        return 2
    from harness.data import DataError

    try:
        info = compute(args.folder, args.images, args.split, args.cam_class, args.seed)
    except (FileNotFoundError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or paths.explain
    draw(info, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
