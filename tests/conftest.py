import os
from pathlib import Path

import pytest

# ../shared/ beside the checkout (as laid out for developers and CI) holds the design and real
# ToolBench/StableToolBench sample files; tests that read them skip when it is absent.
SHARED = Path(os.environ.get("TOOLSFT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TOOLBENCH_SAMPLE = SHARED / "toolbench-sample"

# Tests never reach the hub; fail fast instead of waiting on network time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """All five notebooks, once per test session, through papermill on the smoke profile.

    Outputs go to a temporary folder, so a test run never touches outputs/smoke/.
    """
    from lib import config, run

    out = tmp_path_factory.mktemp("smoke")
    overrides = {"output_dir": str(out)}
    executed = run.run("smoke", overrides, force=True)
    return {"out": out, "executed": executed, "cfg": config.load("smoke", overrides)}
