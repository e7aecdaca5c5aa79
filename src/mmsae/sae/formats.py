"""Checkpoint formats: mmsae's own, SAELens folders, sparsify folders (and per-hookpoint trees).

Every reader maps into the same `SAE` object; conversions that change the parametrisation
(SAELens' decoder-norm rescaling, transposed encoders) are folded so outputs match the peer's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmsae.sae.base import SAE
from mmsae.sae.config import FORMAT_NAME, SAEConfig, SAEConfigError
from mmsae.sae.io_utils import atomic_dir

MMSAE_CONFIG = "config.json"
MMSAE_WEIGHTS = "sae.safetensors"
SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_CONFIG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"


class UnknownCheckpointError(SAEConfigError):
    """A folder that is none of the layouts mmsae reads."""


def detect_format(path: Path) -> str | None:
    if (path / MMSAE_CONFIG).is_file():
        try:
            if json.loads((path / MMSAE_CONFIG).read_text()).get("format") == FORMAT_NAME:
                return "mmsae"
        except json.JSONDecodeError:
            return None
    if (path / SAELENS_CONFIG).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return "saelens"
    if (path / SPARSIFY_CONFIG).is_file() and (path / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    return None


def list_hookpoints(path: Path) -> list[str]:
    """Sub-folders that hold a readable SAE (the sparsify / Multimodal-SAE release layout)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and detect_format(p) is not None)


def load_any(path: Path, hookpoint: str | None = None) -> SAE:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no SAE checkpoint at {path}")
    if hookpoint is not None:
        path = path / hookpoint
    kind = detect_format(path)
    if kind is None:
        hooks = list_hookpoints(path)
        if len(hooks) == 1:
            return load_any(path / hooks[0])
        if hooks:
            raise UnknownCheckpointError(f"{path} holds SAEs for several hookpoints {hooks}; pass hookpoint=")
        files = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else []
        raise UnknownCheckpointError(
            f"{path} is not an mmsae ({MMSAE_CONFIG} with format=mmsae + {MMSAE_WEIGHTS}), SAELens "
            f"({SAELENS_CONFIG} + {SAELENS_WEIGHTS}) or sparsify ({SPARSIFY_CONFIG} + {SPARSIFY_WEIGHTS}) "
            f"checkpoint; it contains {files}"
        )
    return {"mmsae": load_mmsae, "saelens": load_saelens, "sparsify": load_sparsify}[kind](path)


def _hook_layer(name: str | None) -> int | None:
    m = re.search(r"(?:layers|blocks|h)\.(\d+)", name or "")
    return int(m.group(1)) if m else None


def _build(cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> SAE:
    sae = SAE.from_config(cfg)
    missing, unexpected = sae.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise SAEConfigError(f"checkpoint tensors do not fit a {cfg.kind} SAE: missing {missing}, unexpected {unexpected}")
    return sae


def _check_shapes(tensors: dict[str, torch.Tensor], d_in: int, n_latents: int) -> None:
    want = {"W_enc": (n_latents, d_in), "W_dec": (n_latents, d_in), "b_enc": (n_latents,), "b_dec": (d_in,)}
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise SAEConfigError(f"{name} has shape {tuple(tensors[name].shape)}, config says {shape}")


# -- mmsae ------------------------------------------------------------------------------------------
def load_mmsae(path: Path) -> SAE:
    cfg = SAEConfig.load(path / MMSAE_CONFIG)
    tensors = load_file(str(path / MMSAE_WEIGHTS))
    _check_shapes(tensors, cfg.d_in, cfg.n_latents)
    return _build(cfg, tensors)


def save_mmsae(sae: SAE, path: Path) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / MMSAE_WEIGHTS), metadata={"format": FORMAT_NAME})
        sae.cfg.save(tmp / MMSAE_CONFIG)
    return path


# -- SAELens ----------------------------------------------------------------------------------------
_SAELENS_KIND = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}


def load_saelens(path: Path) -> SAE:
    raw: dict[str, Any] = json.loads((path / SAELENS_CONFIG).read_text())
    arch = raw.get("architecture", "standard")
    if arch not in _SAELENS_KIND:
        raise UnknownCheckpointError(f"SAELens architecture {arch!r} is not supported (have {sorted(_SAELENS_KIND)})")
    norm = raw.get("normalize_activations", "none") or "none"
    meta = raw.get("metadata") or {}
    tensors = load_file(str(path / SAELENS_WEIGHTS))
    scale = 1.0
    if norm == "expected_average_only_in":
        scaler = path / "activation_scaler.json"
        if not scaler.is_file():
            raise SAEConfigError(f"{path}: normalize_activations={norm!r} but no activation_scaler.json to fold")
        scale = float(json.loads(scaler.read_text())["scaling_factor"])
    elif norm != "none":
        raise SAEConfigError(f"{path}: SAELens normalize_activations={norm!r} is per-token and cannot be folded")
    d_in, n_latents = int(raw["d_in"]), int(raw["d_sae"])
    W_enc = tensors["W_enc"].T.contiguous()  # SAELens stores [d_in, d_sae]
    b_enc, W_dec, b_dec = tensors["b_enc"], tensors["W_dec"], tensors["b_dec"]
    out = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    kind = _SAELENS_KIND[arch]
    if raw.get("rescale_acts_by_decoder_norm", False):
        # SAELens selects top-k on pre·‖W_dec_f‖ and decodes z/‖W_dec_f‖: fold both into the weights.
        norms_F = W_dec.norm(dim=1).clamp_min(1e-8)
        out["W_enc"] = W_enc * norms_F[:, None]
        out["b_enc"] = b_enc * norms_F
        out["W_dec"] = W_dec / norms_F[:, None]
        if "threshold" in tensors:
            tensors["threshold"] = tensors["threshold"] * norms_F
    if kind == "jumprelu":
        out["log_threshold"] = tensors["threshold"].clamp_min(1e-12).log()
    if kind == "batchtopk":
        out["threshold"] = tensors.get("topk_threshold", torch.zeros(())).reshape(())
    cfg = SAEConfig(
        kind=kind,
        d_in=d_in,
        n_latents=n_latents,
        k=raw.get("k"),
        l1_coefficient=raw.get("l1_coefficient"),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        hook_name=meta.get("hook_name", raw.get("hook_name")),
        hook_layer=meta.get("hook_layer", raw.get("hook_layer")),
        model=meta.get("model_name", raw.get("model_name")),
        dtype=str(W_dec.dtype).removeprefix("torch."),
        extra={"source_format": "saelens", "saelens_architecture": arch},
    )
    if cfg.hook_layer is None:
        cfg.hook_layer = _hook_layer(cfg.hook_name)
    _check_shapes(out, d_in, n_latents)
    sae = _build(cfg, out)
    if scale != 1.0:
        sae = sae.folded(scale)
    return sae


def save_saelens(sae: SAE, path: Path) -> Path:
    """SAELens inference layout. BatchTopK becomes a JumpReLU with one shared threshold, as SAELens
    itself saves it; decoder norms are stored as they are (`rescale_acts_by_decoder_norm` false)."""
    cfg = sae.cfg
    sd = {k: v.detach().cpu() for k, v in sae.state_dict().items()}
    tensors = {"W_enc": sd["W_enc"].T.contiguous(), "b_enc": sd["b_enc"], "W_dec": sd["W_dec"], "b_dec": sd["b_dec"]}
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}[cfg.kind]
    if cfg.kind == "jumprelu":
        tensors["threshold"] = sd["log_threshold"].exp()
    if cfg.kind == "batchtopk":
        tensors["threshold"] = torch.full((cfg.n_latents,), float(sd["threshold"]), dtype=sd["W_dec"].dtype)
    meta = {"model_name": cfg.model, "hook_name": cfg.hook_name, "hook_layer": cfg.hook_layer, "sae_lens_training_version": None}
    out: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.n_latents,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
    }
    if arch == "topk":
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / SAELENS_WEIGHTS))
        (tmp / SAELENS_CONFIG).write_text(json.dumps(out, indent=2) + "\n")
    return path


# -- sparsify ---------------------------------------------------------------------------------------
def load_sparsify(path: Path) -> SAE:
    raw: dict[str, Any] = json.loads((path / SPARSIFY_CONFIG).read_text())
    if raw.get("activation", "topk") != "topk":
        raise UnknownCheckpointError(f"{path}: sparsify activation {raw['activation']!r} is not supported")
    for flag in ("skip_connection", "transcode", "multi_topk"):
        if raw.get(flag) and flag != "multi_topk":
            raise UnknownCheckpointError(f"{path}: sparsify {flag}=True (a transcoder/skip model) is not an SAE mmsae reads")
    d_in = int(raw["d_in"])
    n_latents = int(raw.get("num_latents") or 0) or d_in * int(raw.get("expansion_factor", 32))
    tensors = load_file(str(path / SPARSIFY_WEIGHTS))
    out = {
        "W_enc": tensors["encoder.weight"],
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    _check_shapes(out, d_in, n_latents)
    cfg = SAEConfig(
        kind="topk",
        d_in=d_in,
        n_latents=n_latents,
        k=int(raw.get("k", 32)),
        hook_name=path.name,
        hook_layer=_hook_layer(path.name),
        dtype=str(out["W_dec"].dtype).removeprefix("torch."),
        extra={"source_format": "sparsify"},
    )
    return _build(cfg, out)


def save_sparsify(sae: SAE, path: Path) -> Path:
    if sae.cfg.kind != "topk":
        raise SAEConfigError(f"sparsify stores TopK SAEs only, not {sae.cfg.kind!r}")
    sd = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    tensors = {"encoder.weight": sd["W_enc"], "encoder.bias": sd["b_enc"], "W_dec": sd["W_dec"], "b_dec": sd["b_dec"]}
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, sae.cfg.n_latents // sae.cfg.d_in),
        "normalize_decoder": True,
        "num_latents": sae.cfg.n_latents,
        "k": sae.cfg.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.cfg.d_in,
    }
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / SPARSIFY_WEIGHTS))
        (tmp / SPARSIFY_CONFIG).write_text(json.dumps(cfg) + "\n")
    return path
