"""Super-resolution on Set5 and Set14: PSNR/SSIM (Y channel of BT.601, `scale` pixels shaved, outputs rounded to 8
bits, grey files scored on their grey values, as the published evaluations) of bicubic upsampling, SRCNN (x3),
SRResNet (x4) and SRGAN (x4, started from that SRResNet), each trained for a fixed number of steps on the photos of
CMP Facades, beside the published values (labelled as such: theirs were trained on ImageNet subsets on GPUs for
days). Validation during training uses the Facades val photos; Set5 and Set14 are scored once, after training.

    LIGHTNING_GEN_DATA=/path/to/datasets python bench/sr_set5.py [--steps 1845 1634 275] [--accelerator cpu]
        [--out bench/out/sr]

Prints one row per (method, scale, set) and where each run's strips are.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

from common import QUIET, ROOT, cli, evaluate, printed_metrics

PUBLISHED = {  # (method, scale, set): (PSNR, SSIM) from the papers (Dong et al. 2016 TPAMI; Ledig et al. 2017).
    # Ledig et al.'s SSIM (x4 rows) comes from another SSIM implementation (their bicubic rows are 0.01 to 0.04 above
    # the same images scored here), so it is not shown beside ours: None
    ("bicubic", 3, "Set5"): (30.39, 0.8682), ("SRCNN", 3, "Set5"): (32.75, 0.9090),
    ("bicubic", 3, "Set14"): (27.54, 0.7736), ("SRCNN", 3, "Set14"): (29.30, 0.8215),
    ("bicubic", 4, "Set5"): (28.43, None), ("SRResNet", 4, "Set5"): (32.05, None),
    ("SRGAN", 4, "Set5"): (29.40, None), ("bicubic", 4, "Set14"): (25.99, None),
    ("SRResNet", 4, "Set14"): (28.49, None), ("SRGAN", 4, "Set14"): (26.02, None),
}


def published(key: tuple) -> str:
    pub = PUBLISHED.get(key)
    if pub is None:
        return "-"
    return f"{pub[0]:.2f} / " + (f"{pub[1]:.4f}" if pub[1] is not None else "n/c")

SHOWN = {"SRCNN": "SRCNN (9-5-5, residual)", "SRResNet, untrained": "SRResNet, untrained (= torch bicubic)",
         "SRResNet": "SRResNet (32 ch, 8 blocks, residual)", "SRGAN": "SRGAN (pixel + MobileNet + 1e-4 GAN)"}


def train(name: str, steps: int, accelerator: str, out: Path, *extra: str,
          evaluate_only: bool = False) -> tuple[Path, float]:
    folder = out / name
    if evaluate_only:
        return folder / "checkpoints" / "last.ckpt", float("nan")
    if folder.exists():
        shutil.rmtree(folder)
    config = ROOT / "configs" / name / "facades_cpu.yaml"
    start = time.perf_counter()
    cli("fit", "--config", str(config), "--trainer.default_root_dir", str(folder), "--trainer.accelerator", accelerator,
        "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", *QUIET, *extra, capture=False)
    wall = (time.perf_counter() - start) / 60
    return folder / "checkpoints" / "last.ckpt", wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs=3, default=[1845, 1634, 275], metavar=("SRCNN", "SRRESNET", "SRGAN"),
                        help="training batches of each model")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: test the checkpoints already in --out (training minutes shown as -)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "sr"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [("srcnn", "SRCNN", 3, args.steps[0], []), ("srresnet", "SRResNet", 4, args.steps[1], [])]
    results = {}
    for name, label, scale, steps, extra in runs:
        ckpt, wall = train(name, steps, args.accelerator, out, *extra, evaluate_only=args.evaluate_only)
        results[label] = (scale, wall, evaluate("test", ckpt.parent.parent / "config.yaml", ckpt,
                                                 "--trainer.accelerator", args.accelerator))
        print(f"{label}: trained {wall:.1f} min, {ckpt}", flush=True)
    # each SRGAN batch takes two optimizer steps (discriminator, generator): Lightning's max_steps counts both
    ckpt, wall = train("srgan", 2 * args.steps[2], args.accelerator, out,
                       "--model.generator_ckpt", str(out / "srresnet" / "checkpoints" / "last.ckpt"),
                       evaluate_only=args.evaluate_only)
    results["SRGAN"] = (4, wall, evaluate("test", ckpt.parent.parent / "config.yaml", ckpt,
                                          "--trainer.accelerator", args.accelerator))
    # the residual SRResNet before any training is torch's bicubic (a = -0.75, sharper than PIL's a = -0.5 that
    # made the LR images and the bicubic rows): what training adds is measured from this row
    untrained = printed_metrics(cli("test", "--config", str(ROOT / "configs" / "srresnet" / "facades_cpu.yaml"),
                                    "--trainer.accelerator", args.accelerator, *QUIET).stdout)
    results["SRResNet, untrained"] = (4, 0.0, untrained)
    order = ["SRCNN", "SRResNet, untrained", "SRResNet", "SRGAN"]
    print("\n| method | scale | set | PSNR (dB) | vs bicubic (dB) | SSIM | training (min) | published PSNR / SSIM |")
    print("|---|---|---|---|---|---|---|---|")
    bicubic = {}
    for label in order:
        scale, wall, metrics = results[label]
        for set_name in ("Set5", "Set14"):
            if label in ("SRCNN", "SRResNet, untrained"):  # the bicubic row of this scale, same evaluation
                b = (metrics[f"test/{set_name}/bicubic_psnr"], metrics[f"test/{set_name}/bicubic_ssim"])
                bicubic[scale, set_name] = b[0]
                rows.append(f"| bicubic | x{scale} | {set_name} | {b[0]:.2f} | - | {b[1]:.4f} | - | "
                            f"{published(('bicubic', scale, set_name))} |")
            psnr, ssim = metrics[f"test/{set_name}/psnr"], metrics[f"test/{set_name}/ssim"]
            gain = psnr - bicubic[scale, set_name]
            minutes = "-" if math.isnan(wall) else f"{wall:.1f}" if wall else "0"  # not trained here / untrained
            rows.append(f"| {SHOWN[label]} | x{scale} | {set_name} | {psnr:.2f} | {gain:+.2f} | {ssim:.4f} | "
                        f"{minutes} | {published((label, scale, set_name))} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
