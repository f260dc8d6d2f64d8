"""Process entry point for training, used directly and under torchrun.

    torchrun --nproc_per_node 2 -m training.run --features-dir F --run-dir R --model dlf
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.distributed import shutdown_distributed
from training.trainer import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train one CTR model with TorchRec (one rank per process).")
    p.add_argument("--features-dir", type=Path, required=True, help="offline store written by `recast features build`")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints, best.pt and result.json go here")
    p.add_argument("--config-json", default="{}", help="TrainConfig fields as JSON, e.g. '{\"epochs\": 3}'")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --run-dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = TrainConfig(**json.loads(args.config_json))
    try:
        result = train(cfg, args.features_dir, args.run_dir, resume=not args.no_resume)
        import torch.distributed as dist

        if dist.get_rank() == 0:
            print(json.dumps({"best_epoch": result.best_epoch, "val_auc": result.val_auc, "test_auc": result.test_auc,
                              "test_logloss": result.test_logloss, "examples_per_second": result.examples_per_second}))
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
