"""Write the six-hospital study that measures the label-free estimates (issue 24), each hospital held out whole.

The study file that ``write_synthetic`` writes holds each hospital out in turn but tests on its test split only
(a fifth of it), where the true AUC itself scatters by about 0.05 and hides the estimators' errors. Here every
held-out hospital is also copied under ``<name>_all``, a dataset no configuration trains on, so it is an external
test set used whole (a study refuses one root under two names: the same images would be in training and test).

    python benchmarks/estimate_sites_study.py OUT             # synthesize (seconds) and write OUT/est.yaml
    cxrgen study OUT/est.yaml                                 # 6 trainings: about 35 min on 2 cores
    cxrgen report OUT/runs/est --no-review
    python benchmarks/estimate_sites.py OUT/runs/est          # error per method, baselines, the flag's hit rate

The figures of 2026-12-07 are in docs/howto/before-the-labels.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from cxrgen.synthetic import write_synthetic
from cxrgen.synthetic.write import ALL_HOSPITALS


def study(written: dict[str, object], *, epochs: int, arch: str) -> dict[str, object]:
    """The synthesized study file, changed to train ``arch`` and test each held-out hospital whole."""
    datasets = dict(written["datasets"])  # type: ignore[call-overload]
    for name in ALL_HOSPITALS:
        datasets[f"{name}_all"] = {**datasets[name], "root": f"{name}_all"}
    written = {key: value for key, value in written.items() if key != "design"}
    return {
        **written,
        "name": "estimate-sites",
        "out": "runs/est",
        "datasets": datasets,
        "architectures": [arch],
        "train": {"batch_size": 32, "lr": 1.0e-3, "max_epochs": epochs, "patience": 3, "pretrained": False,
                  "seed": 0, "num_workers": 0, "flip": 0.5},
        "evaluation": {"bootstrap": 200, "estimate": {"labelled": True}},
        "configurations": [
            {"name": f"loo-{held}", "train": [h for h in ALL_HOSPITALS if h != held],
             "internal": [h for h in ALL_HOSPITALS if h != held], "external": [f"{held}_all"]}
            for held in ALL_HOSPITALS
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()
    write_synthetic(args.out, scale=args.scale, image_size=args.image_size, hospitals=ALL_HOSPITALS, workers=2)
    for name in ALL_HOSPITALS:
        if not (args.out / f"{name}_all").exists():
            shutil.copytree(args.out / name, args.out / f"{name}_all")
    written = yaml.safe_load((args.out / "study.yaml").read_text(encoding="utf-8"))
    text = yaml.safe_dump(study(written, epochs=args.epochs, arch=args.arch), sort_keys=False, width=120)
    (args.out / "est.yaml").write_text(text, encoding="utf-8")
    print(f"wrote {args.out / 'est.yaml'}; next: cxrgen study {args.out / 'est.yaml'}")


if __name__ == "__main__":
    main()
