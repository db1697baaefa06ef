#!/usr/bin/env python3
"""PyTorch + timm side of `cargo xtask bench --compare-torch`.

Measures what graft's bench measures, the same way: random input of the same batch and resolution, untimed
warm-up repetitions then timed ones (wall seconds each), on the same number of threads.

  forward     eval() under torch.no_grad()
  train-head  a 2-class nn.Linear on random pooled features, 100 SGD steps per repetition (cached-feature training)
  train-last  the last feature stage (timm feature_info[-1]) and everything after it trainable, the rest frozen
  train-all   every layer trainable

Training steps: timm create_model(name, pretrained=False, num_classes=2) in train(), cross-entropy on labels
i % 2, SGD momentum 0.9 (lr 0.01). Vision transformers are built at the bench resolution (img_size).

Each measurement runs in its own child process (this script with `--one MODEL MEASURE`), so its peak resident
memory (`ru_maxrss`, reported as `peak_rss_mib`) is that measurement's alone, as graft's bench does with `VmHWM`.

Prints one line `TORCH_BENCH {json}` on stdout; a model or measurement that fails is reported in its row's status.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

MARKER = "TORCH_BENCH "
MEASURES = ("forward", "train-head", "train-last", "train-all")
HEAD_STEPS = 100


def build(timm, name, size, num_classes):
    """The timm model at `size` (img_size for models that take it, e.g. ViTs and DINOv2 at 224)."""
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=size)
    except TypeError:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)


def timed(warmup, reps, f):
    for _ in range(warmup):
        f()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def last_stage_params(model):
    """Names of the parameters from the last feature stage's module (timm `feature_info`) to the end, and it."""
    names = [n for n, _ in model.named_parameters()]
    module = model.feature_info[-1]["module"]
    first = next((i for i, n in enumerate(names) if n.startswith(module + ".")), None)
    if first is None:
        raise RuntimeError(f"no parameters under the last feature stage `{module}`")
    return set(names[first:]), module


def measure(torch, timm, name, what, batch, size, warmup, reps):
    labels = torch.arange(batch) % 2
    if what == "train-head":
        nf = build(timm, name, size, 0).num_features
        head = torch.nn.Linear(nf, 2)
        feats = torch.rand(batch, nf) * 2 - 1
        opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)

        def steps():
            for _ in range(HEAD_STEPS):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(head(feats), labels).backward()
                opt.step()

        return batch * HEAD_STEPS, timed(warmup, reps, steps), f"nn.Linear({nf}, 2), SGD momentum 0.9"
    model = build(timm, name, size, 2)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    if what == "forward":
        model.eval()

        def fwd():
            with torch.no_grad():
                model(x)

        return batch, timed(warmup, reps, fwd), "eval, no_grad"
    note = "all layers"
    if what == "train-last":
        keep, module = last_stage_params(model)
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        note = f"from {module} on"
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()

    return batch, timed(warmup, reps, step), f"{note}, SGD momentum 0.9"


def one(a, torch, timm, name, what):
    """One measurement in this process: its row, with this process's peak resident memory."""
    row = {"model": name, "measure": what, "status": "ok", "images_per_rep": 0, "wall_s": [], "note": ""}
    try:
        if what not in MEASURES:
            raise ValueError(f"no PyTorch equivalent of `{what}`")
        n, wall, note = measure(torch, timm, name, what, a.batch, a.size, a.warmup, a.reps)
        row.update(images_per_rep=n, wall_s=wall, note=note)
        # Linux reports ru_maxrss in KiB.
        row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception as e:  # one failing model must not hide the others
        row["status"] = "skipped: " + " ".join(f"{type(e).__name__}: {e}".split())
    return row


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="timm names, comma-separated")
    ap.add_argument("--measures", required=True, help=",".join(MEASURES))
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "MEASURE"), help="run one measurement in this process")
    a = ap.parse_args(argv)

    import torch
    import timm

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    if a.one:
        print(MARKER + json.dumps(one(a, torch, timm, *a.one)), flush=True)
        return 0
    rows = []
    common = [f"--{k}={getattr(a, k)}" for k in ("models", "measures", "batch", "size", "warmup", "reps", "threads")]
    for name in [m for m in a.models.split(",") if m]:
        for what in [m for m in a.measures.split(",") if m]:
            print(f"torch bench: {name} {what} ...", file=sys.stderr, flush=True)
            child = subprocess.run(
                [sys.executable, __file__, *common, "--one", name, what], capture_output=True, text=True
            )
            lines = [l for l in child.stdout.splitlines() if l.startswith(MARKER)]
            if lines:
                rows.append(json.loads(lines[-1][len(MARKER):]))
            else:
                why = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
                rows.append({"model": name, "measure": what, "status": "skipped: " + why,
                             "images_per_rep": 0, "wall_s": [], "note": ""})
    report = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
