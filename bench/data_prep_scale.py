"""Data-prep at the paper's scale: records/s and peak memory of stage 01 on N synthetic records.

    python bench/data_prep_scale.py                # N = 187,542, the paper's example count
    python bench/data_prep_scale.py --records 20000 --num-proc 2

The records are the sample corpus's, repeated with fresh ids until there are N, written as one JSON
list like ToolBench's released toolllama_G123_dfs_train.json. The stage runs in a child process so
its peak resident memory (and its map workers') is measured on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_records(path: Path, n: int, seed: int) -> int:
    from lib.toolbench import sample
    base_dir = path.parent / "sample"
    sample.generate(base_dir, seed=seed)
    base = json.loads((base_dir / "train" / "toolllama_G123_dfs_train.json").read_text())
    with open(path, "w") as fh:   # streamed out, as the real 187k-record file is too large to hold twice
        fh.write("[")
        for i in range(n):
            record = dict(base[i % len(base)], id=f"{base[i % len(base)]['id']} #{i}")
            fh.write(("," if i else "") + json.dumps(record))
        fh.write("]")
    return path.stat().st_size


def child(train_path: str, out: str, num_proc: int) -> None:
    from lib.common import config
    from lib.data import data
    cfg = config.load("smoke", {"output_dir": out, "data.generate_sample": False,
                                "data.train_path": train_path, "data.num_proc": num_proc})
    t0 = time.perf_counter()
    stats = data.prepare(cfg)
    seconds = time.perf_counter() - t0
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "records": stats["records_used"],
                      "examples": stats["examples_written"], "peak_rss_main_mib": self_kb / 1024,
                      "peak_rss_worker_mib": child_kb / 1024,
                      "p50_tokens": stats["token_length_percentiles"]["p50"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=187_542)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "toolllama_G123_dfs_train.json"
        t0 = time.perf_counter()
        size = write_records(train, args.records, args.seed)
        print(f"wrote {args.records:,} records ({size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.1f} s")
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        done = subprocess.run([sys.executable, __file__, "--child", str(train), str(Path(tmp) / "out"),
                               str(args.num_proc)], capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            sys.exit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"data stage on {result['records']:,} records -> {result['examples']:,} examples "
          f"(median {result['p50_tokens']} tokens), num_proc={args.num_proc}, {os.cpu_count()} CPUs")
    print(f"  wall time        {result['seconds']:.1f} s")
    print(f"  records/s        {result['records'] / result['seconds']:,.0f}")
    print(f"  peak RSS, stage  {result['peak_rss_main_mib']:,.0f} MiB (largest map worker "
          f"{result['peak_rss_worker_mib']:,.0f} MiB)")
    print(f"  input file       {size / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
