"""Inference latency: ONNX Runtime (CPU EP) vs PyTorch eager on the exported DLF model.

* ``onnxruntime``: ``artifacts/models/dlf/1/model.onnx`` in an onnxruntime
  session configured as the Triton model runs it (serving/triton_python_model.py:
  CPU EP, sequential, ``--threads`` intra-op threads, no spinning, full graph
  optimisation).
* ``pytorch``: ``InferenceModel`` rebuilt from ``best.pt``
  (training.export.inference_model_from_checkpoint), eval mode under
  ``torch.inference_mode()``, same thread count.

Inputs are real rows of the MovieLens test split (padded ids + mask, as the
gateway sends them). For every batch size the two runtimes alternate in
blocks (ORT block, PyTorch block, ...) so that load from other processes
hits both; the table gives the median and p99 of single-call latencies.

    .venv/bin/python benchmarks/inference.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch / onnxruntime load)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features-dir", type=Path, default=common.FEATURES_DIR)
    p.add_argument("--checkpoint", type=Path, default=common.CHECKPOINT, help="best.pt of the trained model")
    p.add_argument("--onnx", type=Path, default=common.ONNX_MODEL, help="the exported ONNX graph of that checkpoint")
    p.add_argument("--batch-sizes", default="256,1,1024", help="comma-separated; the first one is the headline row")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    p.add_argument("--blocks", type=int, default=10, help="alternating blocks per runtime and batch size")
    p.add_argument("--min-block-s", type=float, default=0.4, help="minimum seconds per block (calls per block adapt to it)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per runtime and batch size")
    p.add_argument("--out", type=Path, default=common.OUT_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    common.pin_threads(args.threads)
    import numpy as np
    import torch

    common.pin_threads(args.threads)
    from training.data import load_split
    from training.export import inference_model_from_checkpoint

    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    common.progress(f"loading {args.checkpoint} and {args.onnx}")
    best = torch.load(args.checkpoint, weights_only=False)
    model = inference_model_from_checkpoint(best)
    session = common.ort_session(args.onnx, args.threads)
    ort_inputs = {i.name for i in session.get_inputs()}
    test = load_split(args.features_dir, "test")
    if max(sizes) > len(test):
        raise SystemExit(f"largest batch {max(sizes)} exceeds the {len(test)} test rows")

    def feeds(n: int, offset: int):
        ids = test.ids[offset : offset + n].contiguous()
        mask = test.mask[offset : offset + n].contiguous()
        dense = test.dense[offset : offset + n].contiguous()
        np_feed = {"sparse_ids": ids.numpy(), "sparse_mask": mask.numpy()}
        if "dense" in ort_inputs:
            np_feed["dense"] = dense.numpy()
        torch_args = (ids, mask, dense if dense.shape[1] else None)
        return np_feed, torch_args

    def run_ort(feed, _):
        return session.run(["probability"], feed)[0]

    def run_torch(_, targs):
        with torch.inference_mode():
            return model(*targs)

    runners = {"onnxruntime": run_ort, "pytorch": run_torch}
    results: dict[str, dict] = {}
    for n in sizes:
        # a few different real batches, cycled, so no single batch is special
        batches = [feeds(n, (k * n) % max(1, len(test) - n)) for k in range(4)]
        diff = max(float(np.max(np.abs(run_ort(*b) - run_torch(*b).numpy()))) for b in batches)
        for name, fn in runners.items():
            for i in range(args.warmup):
                fn(*batches[i % len(batches)])
        # calls per block so that a block lasts about min_block_s
        probe = {}
        for name, fn in runners.items():
            t = time.perf_counter()
            for i in range(5):
                fn(*batches[i % len(batches)])
            probe[name] = (time.perf_counter() - t) / 5
        calls = {name: max(3, int(args.min_block_s / max(probe[name], 1e-6))) for name in runners}
        lat: dict[str, list[float]] = {name: [] for name in runners}
        paired = []  # per block pair: PyTorch median / ORT median (robust to load drifting between blocks)
        names = list(runners)
        for blk in range(args.blocks):
            block: dict[str, list[float]] = {name: [] for name in runners}
            for name in (names if blk % 2 == 0 else names[::-1]):
                fn = runners[name]
                for i in range(calls[name]):
                    b = batches[i % len(batches)]
                    t = time.perf_counter()
                    fn(*b)
                    block[name].append(time.perf_counter() - t)
                lat[name].extend(block[name])
            paired.append(common.ratio(common.median(block["pytorch"]), common.median(block["onnxruntime"])))
        row = {"max_abs_diff": diff}
        for name in runners:
            s = common.summary_ms(lat[name])
            s["rows_per_s"] = n / (s["p50_ms"] / 1e3)
            row[name] = s
        row["speedup_p50"] = common.ratio(row["pytorch"]["p50_ms"], row["onnxruntime"]["p50_ms"])
        row["speedup_p99"] = common.ratio(row["pytorch"]["p99_ms"], row["onnxruntime"]["p99_ms"])
        row["speedup_paired_blocks"] = paired
        row["speedup_paired_median"] = common.median(paired)
        results[str(n)] = row
        common.progress(
            f"batch {n}: ORT p50 {row['onnxruntime']['p50_ms']:.3f} ms, PyTorch p50 {row['pytorch']['p50_ms']:.3f} ms "
            f"-> {row['speedup_p50']:.2f}x (|diff| {diff:.1e})"
        )

    rows = []
    for n in sizes:
        r = results[str(n)]
        o, t = r["onnxruntime"], r["pytorch"]
        rows.append([n, o["p50_ms"], t["p50_ms"], o["p99_ms"], t["p99_ms"], o["rows_per_s"], t["rows_per_s"], r["speedup_p50"], r["speedup_paired_median"]])
    title = (f"Inference, DLF (MovieLens test rows), CPU, {args.threads} intra-op thread(s); "
             f"ORT {sys.modules['onnxruntime'].__version__} vs PyTorch {torch.__version__} eager (inference_mode); "
             f"{args.blocks} alternating blocks per runtime")
    text = title + "\n\n" + common.table(
        ["batch", "ORT p50 ms", "PyTorch p50 ms", "ORT p99 ms", "PyTorch p99 ms", "ORT rows/s", "PyTorch rows/s", "ORT speedup (p50s)", "ORT speedup (median of paired blocks)"],
        rows, digits=3,
    )
    head = results[str(sizes[0])]
    text += (f"\n\nORT / PyTorch throughput at batch {sizes[0]} = {head['speedup_p50']:.2f}x from the p50s, "
             f"{head['speedup_paired_median']:.2f}x median of paired blocks (target >= 2x at 256)")
    text += "\n" + common.load_note()
    print(text)
    payload = {
        "benchmark": "inference",
        "args": vars(args),
        "environment": common.environment(args.threads),
        "results": results,
        "table": text,
    }
    path = common.write_json("inference", payload, args.out)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
