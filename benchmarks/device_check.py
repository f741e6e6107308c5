"""The GPU check of dermbench, in one go (a few minutes): run it the moment a GPU machine is there.

    python benchmarks/device_check.py [--quick] [--out DIR]

Self-contained: random-init models, a generated lesion-like dataset, no downloads, no network. On a
machine where torch sees no CUDA GPU it prints ``skipped: no GPU`` and exits 0. Otherwise it runs
the checks below and prints, per check, the measured numbers, a ratio and one ``PASS`` / ``FAIL`` /
``SKIP`` line; the exit status is 1 when a check failed.

1. **train**: images/s of the finetune loop itself (``fit()``: paper augmentation in the loader's
   workers, uint8 batches normalised on the GPU, AMP, channels-last, AdamW, weighted oversampling)
   for ``convnext_tiny`` at 224 px, batch 128, against timm's published AMP training throughput for
   the GPU's class (:data:`TIMM_REFERENCE`). Pass: at least 0.7 of the published figure; for a GPU
   class timm publishes no figure for, the RTX 3090's figure is the floor of any GPU with native
   bf16 (compute capability 8.0+; A100, H100, H200, L40 and RTX 4090 are all faster than a 3090), and
   older GPUs are reported without a verdict.
2. **fed**: the same model's bare training step on tensors already on the GPU (no loader) against
   ``fit()``. Pass: ``fit()`` reaches 0.8 of the bare step, i.e. the loader keeps the GPU fed.
3. **extract**: embedding extraction images/s (the probe's ``embed_split``: uint8 from the image
   cache, normalised and autocast on the GPU, one loader across shards) for the ``convnext_tiny``
   backbone, against timm's published AMP inference throughput (same class rule).
4. **resume**: a training run in a subprocess is killed (SIGKILL) in the middle of epoch 2 and
   started again: it must continue from the epoch-1 checkpoint, finish every epoch, and its
   history is compared with an uninterrupted run (GPU kernels are not bit-deterministic with
   cuDNN autotuning: the differences are printed, the verdict is on the resume itself).
5. **ray**: GPU cells under the Ray executor: every cell sees exactly one GPU, no worker process
   serves two GPU cells (``max_calls=1``), and with two GPUs two cells run at the same time on two
   different GPUs. Skipped when Ray is not installed; the two-GPU part is skipped on one GPU.

The throughput references are the numbers timm publishes for its own benchmark script (synthetic
tensors, ``timm/benchmark.py``), so a loop that includes data loading and augmentation reaching
0.7 of them is close to what the model allows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: timm's published throughput (images/s) of ``convnext_tiny`` at 224 px, AMP, channels-last (NHWC),
#: from https://github.com/huggingface/pytorch-image-models/tree/main/results (the CSV named in each
#: entry). Training figures are published for the RTX 3090 only.
TIMM_REFERENCE = {
    "rtx3090": {
        "train": (819.24, "benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv: PyTorch 1.12, CUDA 11.3, batch 256"),
        "infer": (3120.16, "benchmark-infer-amp-nhwc-pt240-cu124-rtx3090.csv: PyTorch 2.4, CUDA 12.4, batch 1024"),
    },
    "rtx4090": {
        "infer": (4844.53, "benchmark-infer-amp-nhwc-pt240-cu124-rtx4090.csv: PyTorch 2.4, CUDA 12.4, batch 512"),
    },
}
TRAIN_PASS, FED_PASS, EXTRACT_PASS = 0.7, 0.8, 0.7

#: What the checks run: the real sizes on a GPU; ``--cpu-smoke`` runs every code path on a CPU with a
#: tiny model and dataset (to check the script itself where there is no GPU; its numbers mean nothing).
PLAN = {"device": "cuda", "model": "convnext_tiny", "size": 224, "batch": 128, "extract_batch": 256}
SMOKE_PLAN = {"device": "cpu", "model": "resnet10t", "size": 48, "batch": 16, "extract_batch": 32}

RESULTS: list[tuple[str, str, str]] = []  # (check, verdict, line)


def report(check: str, verdict: str, line: str) -> None:
    RESULTS.append((check, verdict, line))
    print(f"{verdict:<4} {check:<8} {line}", flush=True)


def gpu_class(name: str) -> str | None:
    text = name.lower().replace(" ", "")
    for key in TIMM_REFERENCE:
        if key.replace("rtx", "") in text:
            return key
    return None


def reference(kind: str, name: str, capability: tuple[int, int]) -> tuple[float | None, str, float]:
    """(published images/s or None, where it comes from, pass ratio) for this GPU."""
    cls = gpu_class(name)
    if cls and kind in TIMM_REFERENCE[cls]:
        value, source = TIMM_REFERENCE[cls][kind]
        return value, f"timm {cls}: {source}", TRAIN_PASS if kind == "train" else EXTRACT_PASS
    if capability >= (8, 0):
        value, source = TIMM_REFERENCE["rtx3090"][kind]
        return value, (f"no timm figure for {name}; the RTX 3090's as a floor of a GPU with native bf16 "
                       f"({source})"), 1.0
    return None, f"no timm figure for {name} (compute capability {capability[0]}.{capability[1]})", 0.0


def verdict_for(measured: float, ref: float | None, needed: float) -> str:
    if ref is None:
        return "SKIP"
    return "PASS" if measured >= needed * ref else "FAIL"


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def lesion_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A lesion-like RGB image: smooth skin tone, a darker irregular blob, sensor noise."""
    from PIL import Image

    coarse = (rng.random((6, 6, 3)) * 60 + np.array([170, 120, 100])).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.ogrid[:size, :size]
    angle = np.arctan2(yy - size / 2, xx - size / 2)
    radius = size * rng.uniform(0.15, 0.3) * (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)))
    img[np.hypot(xx - size / 2, yy - size / 2) < radius] *= np.float32(rng.uniform(0.35, 0.6))
    img += rng.standard_normal((size, size, 3), dtype=np.float32) * 6
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, n_train: int, n_val: int, n_test: int, size: int = 256) -> Path:
    """A contract dataset folder (images/ + <split>_metadata.csv), ~35 % malignant."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    (root / "images").mkdir(parents=True)
    counts = {"train": n_train, "validation": n_val, "test": n_test}
    names = [(split, f"{split}_{i:05d}.jpg") for split, n in counts.items() for i in range(n)]

    def write(k: int) -> str:
        rng = np.random.default_rng(k)
        Image.fromarray(lesion_image(rng, size)).save(root / "images" / names[k][1], "JPEG", quality=90)
        return "malignant" if rng.random() < 0.35 else "benign"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        labels = list(pool.map(write, range(len(names))))
    for split in counts:
        rows = [f"{name},{label}" for (s, name), label in zip(names, labels) if s == split]
        (root / f"{split}_metadata.csv").write_text("img_id,benign_malignant\n" + "\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def check_train(ds, args, name: str, capability: tuple[int, int]) -> None:
    import torch

    from dermbench.models import build_classifier
    from dermbench.paradigms.finetune.settings import FinetuneSettings
    from dermbench.paradigms.finetune.train import fit, seed_everything

    device = torch.device(PLAN["device"])
    workers = max(1, min(15, (os.cpu_count() or 2) - 1))
    seed_everything(0)
    built = build_classifier(PLAN["model"], weights="random", image_size=PLAN["size"])
    settings = FinetuneSettings.from_preset("paper", image_size=PLAN["size"], resize="squash", epochs=args.epochs,
                                            patience=args.epochs, batch_size=PLAN["batch"], workers=workers,
                                            weights="random")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = fit(built.model, ds, settings, seed=0, work_dir=args.work / "train", mean=built.data_config["mean"],
                 std=built.data_config["std"], device=device, progress=False, log=lambda m: None)
    rates = [float(r["train_images_per_s"]) for r in result.history]
    measured = float(np.median(rates[1:] if len(rates) > 1 else rates))  # epoch 1 includes cuDNN autotuning
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    ref, source, needed = reference("train", name, capability)
    against = f"; {measured / ref:.2f}x of {ref:.0f} (pass >= {needed:g}x; {source})" if ref else f"; {source}"
    report("train", verdict_for(measured, ref, needed),
           f"fit() {PLAN['model']} {PLAN['size']}px batch {PLAN['batch']}, {workers} loader workers: {measured:.0f} img/s (epochs "
           f"{', '.join(f'{r:.0f}' for r in rates)}){peak}{against}")
    bare = bare_train_step(built.model, args)
    report("fed", "PASS" if measured >= FED_PASS * bare else "FAIL",
           f"bare AMP training step on GPU tensors {bare:.0f} img/s; fit() reaches {measured / bare:.2f} of it "
           f"(pass >= {FED_PASS}: the loader keeps the GPU fed)")


def bare_train_step(model, args) -> float:
    """The same model's training step on tensors already on the GPU: the ceiling for fit()."""
    import torch

    from dermbench.utils.device import autocast_dtype

    device = torch.device(PLAN["device"])
    cuda = device.type == "cuda"
    batch, size = PLAN["batch"], PLAN["size"]
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-4)
    dtype = autocast_dtype(device) if cuda else None
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=cuda):
            loss = loss_fn(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(8):
        step()
    sync()
    steps = 20 if args.quick else 40
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - t0)


def check_extract(ds, args, name: str, capability: tuple[int, int]) -> None:
    from dermbench.models import build_embedder
    from dermbench.paradigms.probe.embed_cache import embed_split

    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    embedder = build_embedder(f"timm:{PLAN['model']}", weights="random", image_size=PLAN["size"],
                              resize_mode="squash").to(PLAN["device"])
    batch = PLAN["extract_batch"]
    embed_split(embedder, ds, "validation", batch_size=batch, workers=workers, progress=False)  # warm-up, autotuning
    result = embed_split(embedder, ds, "train", batch_size=batch, workers=workers, progress=False)
    measured = result.images_per_second
    finite = bool(np.isfinite(result.vectors).all())
    ref, source, needed = reference("infer", name, capability)
    against = f"; {measured / ref:.2f}x of {ref:.0f} (pass >= {needed:g}x; {source})" if ref else f"; {source}"
    verdict = verdict_for(measured, ref, needed) if finite else "FAIL"
    report("extract", verdict,
           f"embed_split {PLAN['model']} {PLAN['size']}px batch {batch}, {workers} workers, {len(result.img_ids)} images: "
           f"{measured:.0f} img/s, compute {embedder.identity.get('compute')}, vectors finite {finite}{against}")


CHILD_EPOCHS = 3


def child_train(work: Path, dataset: Path, pause_in_epoch: int | None = None) -> int:
    """Subprocess of the resume check: fit() on the GPU, one line per finished epoch. With
    ``pause_in_epoch`` it stops half way through that epoch's training batches, prints ``MID`` and
    waits there to be killed: the kill lands mid-epoch whatever the epochs' lengths (a sleep of half
    the first epoch, which includes worker start-up and cuDNN autotuning, can outlast the second)."""
    import torch

    from dermbench.data.contract import load_dataset
    from dermbench.models import build_classifier
    from dermbench.paradigms.finetune.settings import FinetuneSettings
    from dermbench.paradigms.finetune.train import fit, seed_everything

    if os.environ.get("DERMBENCH_DEVICE_CHECK_SMOKE"):
        PLAN.update(SMOKE_PLAN)
    ds = load_dataset(dataset, quiet=True)
    seed_everything(1)
    built = build_classifier(PLAN["model"], weights="random", image_size=PLAN["size"])
    settings = FinetuneSettings.from_preset("paper", image_size=PLAN["size"], resize="squash", epochs=CHILD_EPOCHS,
                                            patience=CHILD_EPOCHS, batch_size=PLAN["batch"], weights="random",
                                            workers=max(1, min(15, (os.cpu_count() or 2) - 1)))
    t0 = [time.perf_counter()]
    batches = {"epoch": 1, "seen": 0, "per_epoch": 0}  # training forward passes (micro-batches)

    def pause_mid_epoch(module, inputs) -> None:
        if not module.training:
            return
        batches["seen"] += 1
        if batches["epoch"] == pause_in_epoch and batches["seen"] == max(1, batches["per_epoch"] // 2):
            print(f"MID {pause_in_epoch}", flush=True)
            time.sleep(3600)  # the parent kills this process now

    if pause_in_epoch is not None:
        built.model.register_forward_pre_hook(pause_mid_epoch)

    def epoch_end(epoch: int, row: dict) -> None:
        print(f"EPOCH {epoch} {time.perf_counter() - t0[0]:.3f}", flush=True)
        t0[0] = time.perf_counter()
        batches["per_epoch"] = batches["per_epoch"] or batches["seen"]
        batches["epoch"], batches["seen"] = epoch + 1, 0

    result = fit(built.model, ds, settings, seed=1, work_dir=work, mean=built.data_config["mean"],
                 std=built.data_config["std"], device=torch.device(PLAN["device"]), run_key="device-check",
                 on_epoch_end=epoch_end, progress=False, log=lambda m: None)
    print("RESULT " + json.dumps({"resumed_from": result.resumed_from_epoch, "epochs_run": result.epochs_run,
                                  "history": [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "val_auroc")}
                                              for r in result.history], "notes": result.notes}), flush=True)
    return 0


def _child(work: Path, dataset: Path, kill_mid_epoch: int | None = None) -> tuple[dict | None, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-train", str(work), "--dataset", str(dataset)]
    if kill_mid_epoch is not None:
        cmd += ["--pause-in-epoch", str(kill_mid_epoch)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    result, tail = None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if line.startswith("MID") and kill_mid_epoch is not None:  # the child waits half way through the epoch
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, "killed"
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    proc.wait()
    return result, "\n".join(tail)


def check_resume(dataset: Path, args) -> None:
    from dermbench.paradigms.finetune.train import CHECKPOINT, load_checkpoint

    full, tail = _child(args.work / "resume_full", dataset)
    if full is None:
        report("resume", "FAIL", f"the uninterrupted run did not finish:\n{tail}")
        return
    work = args.work / "resume_killed"
    _, how = _child(work, dataset, kill_mid_epoch=2)
    saved = load_checkpoint(work / CHECKPOINT)
    killed_at = int(saved["epoch"])
    resumed, tail = _child(work, dataset)
    if resumed is None:
        report("resume", "FAIL", f"the resumed run did not finish:\n{tail}")
        return
    delta = max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(full["history"], resumed["history"]))
    ok = (how == "killed" and killed_at == 1 and resumed["resumed_from"] == 1
          and resumed["epochs_run"] == full["epochs_run"] == CHILD_EPOCHS
          and all(np.isfinite(r["val_loss"]) for r in resumed["history"]))
    report("resume", "PASS" if ok else "FAIL",
           f"SIGKILL in epoch 2 (checkpoint at epoch {killed_at}); restarted: resumed from epoch "
           f"{resumed['resumed_from']}, {resumed['epochs_run']}/{CHILD_EPOCHS} epochs; max |val_loss - "
           f"uninterrupted| {delta:.2e} (GPU kernels are not bit-deterministic); notes {resumed['notes']}")


def run_gpu_cell(spec, recorder):
    """Paradigm of the Ray check (registered as ``devicecheck``): hold 1 GiB on the cell's GPU for a
    few seconds and record where it ran; fails on purpose afterwards (no run record is needed)."""
    import torch

    start = time.time()
    cuda = torch.cuda.is_available()  # False only in --cpu-smoke
    block = torch.ones(256, 1024, 1024, device="cuda") if cuda else torch.ones(4)
    uuid = str(getattr(torch.cuda.get_device_properties(0), "uuid", "")) if cuda else "cpu"
    time.sleep(float(spec.settings.get("hold_s", 4.0)))
    info = {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "count": torch.cuda.device_count() if cuda else 0, "uuid": uuid, "device": spec.device, "start": start,
            "end": time.time(), "sum": float(block.flatten()[:4].sum())}
    (Path(recorder.path) / "gpu.json").write_text(json.dumps(info))
    raise RuntimeError("device check cell: placement recorded")


def _register_paradigm() -> None:
    """The Ray check's paradigm, registered when this module is imported (Ray workers import it as the
    plugin ``device_check``)."""
    from dermbench.paradigms import PARADIGMS

    if "devicecheck" not in PARADIGMS:
        PARADIGMS.add("devicecheck", "device_check:run_gpu_cell", "the device check's placement probe")


try:
    _register_paradigm()
except ImportError:  # run as a script from a checkout without dermbench installed: main() adds src/ first
    pass


def check_ray(args, n_gpus: int) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        report("ray", "SKIP", "ray is not installed (pip install 'dermbench[ray]')")
        return
    from dermbench.runner.executors import run_cells
    from dermbench.runner.grid import PlannedCell
    from dermbench.runs.block import Resources
    from dermbench.runs.cell import CellSpec

    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _register_paradigm()
    n_cells = 2 * max(1, min(n_gpus, 2))
    dataset = args.work / "raydata"
    dataset.mkdir(exist_ok=True)
    gpus_per_cell = 1 if PLAN["device"] == "cuda" else 0  # --cpu-smoke: the same flow without GPUs
    cells = [PlannedCell(CellSpec("devicecheck", "devicecheck", f"cell{i}", str(dataset), settings={"hold_s": 4.0},
                                  quiet=True), Resources(num_cpus=1, num_gpus=gpus_per_cell)) for i in range(n_cells)]
    t0 = time.perf_counter()
    run_cells(cells, args.work / "rayruns", executor="ray", address="local", imports=["device_check"])
    seconds = time.perf_counter() - t0
    infos = []
    for cell in cells:
        path = cell.spec.path(args.work / "rayruns") / "gpu.json"
        infos.append(json.loads(path.read_text()) if path.is_file() else None)
    if not all(infos):
        report("ray", "FAIL", f"{sum(i is None for i in infos)} of {n_cells} cells did not run on a GPU (see "
                              f"{args.work / 'rayruns'})")
        return
    expected = (1, "cuda") if gpus_per_cell else (0, "auto")
    one_gpu_each = all((i["count"], i["device"]) == expected for i in infos)
    fresh_workers = len({i["pid"] for i in infos}) == n_cells or not gpus_per_cell
    uuids = {i["uuid"] for i in infos}
    overlap = any(a["start"] < b["end"] and b["start"] < a["end"] and a["uuid"] != b["uuid"]
                  for k, a in enumerate(infos) for b in infos[k + 1:])
    two = n_gpus >= 2
    ok = one_gpu_each and fresh_workers and (not two or (len(uuids) >= 2 and overlap))
    report("ray", "PASS" if ok else "FAIL",
           f"{n_cells} GPU cells in {seconds:.0f}s: each saw one GPU {one_gpu_each}; a fresh worker process per "
           f"cell (max_calls=1) {fresh_workers}; distinct GPUs used {len(uuids)}"
           + (f"; two cells at once on two GPUs {overlap}" if two else "; two-GPU placement: SKIP (one GPU here)"))


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller dataset and fewer epochs (about a minute)")
    parser.add_argument("--out", help="keep the working files here (default: a temporary folder)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every check's code on the CPU with a tiny model and dataset (checks this script "
                             "where there is no GPU; the numbers and verdicts mean nothing)")
    parser.add_argument("--child-train", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--pause-in-epoch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import dermbench  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(SRC))
    import torch

    if args.child_train:
        return child_train(Path(args.child_train), Path(args.dataset), args.pause_in_epoch)
    if args.cpu_smoke:
        PLAN.update(SMOKE_PLAN)
        os.environ["DERMBENCH_DEVICE_CHECK_SMOKE"] = "1"
    elif not torch.cuda.is_available():
        print("skipped: no GPU (torch sees no CUDA device here); run this on the GPU machine")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        args.work = Path(args.out or tmp).absolute()
        args.work.mkdir(parents=True, exist_ok=True)
        os.environ["DERMBENCH_CACHE"] = str(args.work / "cache")
        n_gpus = torch.cuda.device_count() if PLAN["device"] == "cuda" else 0
        if n_gpus:
            from dermbench.utils.device import autocast_dtype

            name = torch.cuda.get_device_name(0)
            capability = torch.cuda.get_device_capability(0)
            print(f"{name}: compute capability {capability[0]}.{capability[1]}, {n_gpus} GPU(s), "
                  f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
                  f"CUDA {torch.version.cuda}, mixed precision {str(autocast_dtype('cuda')).replace('torch.', '')}, "
                  f"{os.cpu_count()} CPUs", flush=True)
        else:
            name, capability = "CPU (--cpu-smoke: the numbers and verdicts mean nothing)", (0, 0)
            print(name, flush=True)
        n_train = 96 if args.cpu_smoke else 2048 if args.quick else 6144
        args.epochs = 2 if args.quick else 3
        t0 = time.perf_counter()
        from dermbench.data.contract import load_dataset
        from dermbench.data.pipeline.decode import ResizePolicy
        from dermbench.data.pipeline.image_cache import build_image_cache

        n_val, n_test = (32, 32) if args.cpu_smoke else (512, 256)
        root = make_dataset(args.work / "data", n_train, n_val, n_test, size=64 if args.cpu_smoke else 256)
        ds = load_dataset(root, quiet=True)
        build_image_cache(ds, ResizePolicy(PLAN["size"], "squash"), progress=False)
        print(f"dataset: {n_train} + {n_val} + {n_test} generated JPEGs, image cache at {PLAN['size']}px, "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
        checks = [("train", lambda: check_train(ds, args, name, capability)),
                  ("extract", lambda: check_extract(ds, args, name, capability)),
                  ("resume", lambda: check_resume(root, args)),
                  ("ray", lambda: check_ray(args, n_gpus))]
        for check, run in checks:
            t_check = time.perf_counter()
            try:
                run()
            except Exception as exc:  # one broken check must not hide the others
                report(check, "FAIL", f"{type(exc).__name__}: {exc}")
            print(f"     ({check}: {time.perf_counter() - t_check:.0f}s)", flush=True)
            if n_gpus:
                torch.cuda.empty_cache()
    failed = [c for c, verdict, _ in RESULTS if verdict == "FAIL"]
    print("device check: " + ", ".join(f"{c} {v}" for c, v, _ in RESULTS)
          + (f" -> {len(failed)} failed" if failed else " -> no failure"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
