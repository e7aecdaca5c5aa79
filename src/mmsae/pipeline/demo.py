"""`mmsae demo`: the main job on the embedded default, one stage after another, into report.md + metrics.json
(+ the pictures the report shows), written atomically: a failed run leaves the previous output intact.

A stage is `stage_x(rep: Report) -> None`: it adds a report section and flat metrics, and may read what the
stages before it left in `rep.out` (`store/`, `store-eval/`, `sae/sae/`, `index-layer3/`, ...)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..defaults import zoo_model_dir
from .finetune_stage import stage_finetune
from .interp import stage_interp
from .layer import DEMO_LAYER
from .report import Report
from .saev_stage import stage_saev
from .stages import stage_harvest, stage_sae, stage_world, stage_zoo
from .steer_stage import stage_steer

STAGES = {"world": stage_world, "zoo": stage_zoo, "harvest": stage_harvest, "sae": stage_sae, "interp": stage_interp,
          "steer": stage_steer, "saev": stage_saev, "finetune": stage_finetune}
# the stages these read the outputs of
NEEDS = {"sae": ("harvest",), "interp": ("harvest", "sae"), "steer": ("harvest", "sae"), "finetune": ("harvest", "sae")}
DEFAULT_STAGES = tuple(STAGES)  # all of them fit the 10-minute budget on 2 quiet cores (BENCHMARKS.md)


@dataclass
class DemoConfig:
    out: str = "demo-out"
    """Report directory: report.md, metrics.json, the pictures, the stores, SAEs and indexes (replaced as a whole)."""
    stages: str = ",".join(DEFAULT_STAGES)
    """Comma-separated stages, run in the demo's order: world, zoo, harvest, sae, interp, steer, saev, finetune (sae
    needs harvest; interp, steer and finetune need harvest and sae; finetune scores with saev's SAE-V when it ran)."""

    def __post_init__(self) -> None:
        names = tuple(s.strip() for s in str(self.stages).split(",") if s.strip())
        unknown = [s for s in names if s not in STAGES]
        if unknown:
            raise ValueError(f"stages: unknown stage {', '.join(map(repr, unknown))}; valid: {', '.join(STAGES)}")
        if not names:
            raise ValueError(f"stages must name at least one of {', '.join(STAGES)}, got {self.stages!r}")
        for s in names:
            missing = [n for n in NEEDS.get(s, ()) if n not in names]
            if missing:
                raise ValueError(f"stages: {s!r} needs {', '.join(map(repr, missing))} in the same run, got "
                                 f"{', '.join(names)}")
        # the demo's order, whatever order they were named in: a stage reads what earlier ones wrote
        self.stages = ",".join(s for s in STAGES if s in names)

    @property
    def stage_list(self) -> tuple[str, ...]:
        return tuple(self.stages.split(","))


def viewer_command(out: Path) -> str:
    """The command that opens the viewer on a demo's output."""
    return (f"mmsae view --index {out}/index-layer{DEMO_LAYER} --model {zoo_model_dir('subject')} "
            f"--sae {out}/sae/sae")


def run_demo(cfg: DemoConfig | None = None) -> dict:
    """Run the stages of `cfg` into `cfg.out`; returns the metrics (also in metrics.json, and printed).
    The report's last section is the command that opens the viewer on the output."""
    from rich.console import Console

    from ..io import atomic_dir, write_config

    cfg = cfg or DemoConfig()
    console = Console(stderr=True)
    out = Path(cfg.out)
    t0 = time.time()
    with atomic_dir(out) as tmp:
        rep = Report(tmp)
        for name in cfg.stage_list:
            t = time.time()
            console.log(f"demo stage: {name}")
            STAGES[name](rep)
            rep.metrics[f"time.{name}_s"] = round(time.time() - t, 1)
        rep.metrics["time.total_s"] = round(time.time() - t0, 1)
        # floating-point results depend on the thread count (a GEMM splits its work by it): say which ran
        rep.metrics["env.torch_threads"] = torch.get_num_threads()
        view = viewer_command(out.resolve())
        if "interp" in cfg.stage_list:
            rep.add("Look at the features", f"Open the viewer on this output:\n\n```\n{view}\n```")
        head = ("# mmsae demo report\n\nEverything below was computed by `mmsae demo` on the embedded default "
                f"(no download; stages: {', '.join(cfg.stage_list)}), in {rep.metrics['time.total_s']:.0f} s.\n")
        rep.write(head)
        write_config(tmp, cfg)
    console.print(json.dumps({k: v for k, v in rep.metrics.items() if isinstance(v, (int, float))}, indent=1))
    if "interp" in cfg.stage_list:
        console.print(f"open the viewer: {view}")
    return rep.metrics
