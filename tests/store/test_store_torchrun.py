"""torchrun with 2 ranks (gloo, CPU): each rank writes its own shards, rank 0 merges the manifest;
the store equals a single-process one."""

import os
import socket
import subprocess
import sys
import textwrap

from mmsae.store import HarvestConfig, harvest

RUNNER = textwrap.dedent("""
    import sys, torch, typer
    torch.set_num_threads(1)
    from mmsae.store.cli import harvest_command
    app = typer.Typer()
    app.command("harvest")(harvest_command)
    app.callback()(lambda: None)
    app(sys.argv[1:])
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_gloo_match_one_process(llava_dir, tmp_path, same_store):
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    out = tmp_path / "dist"
    args = ["harvest", "--model", str(llava_dir), "--layer", "2", "--data", "world:n=7,seed=4", "--out", str(out),
            "--records-per-shard", "2", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script), *args],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    m = json.loads((out / "manifest.json").read_text())
    assert m["created_by"]["world_size"] == 2 and len(m["shards"]) == 4
    single = tmp_path / "single"
    harvest(HarvestConfig(out=str(single), model=str(llava_dir), layer=2, data="world:n=7,seed=4",
                          records_per_shard=2, batch_size=2, progress=False))
    same_store(single, out)
