"""`mmsae finetune`'s config (light to import: no torch)."""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = ("model", "world")


@dataclass
class FinetuneConfig:
    data: str = ""
    """records to train on: any `mmsae.data` spec (jsonl:PATH in LLaVA conversation format, hf:, parquet:, ...)"""
    out: str = ""
    """output directory: model/ (standard HF checkpoint), adapter/ (LoRA), rejects.jsonl, summary.json"""
    model: str = ""
    """any AutoModelForImageTextToText checkpoint directory (empty: the zoo subject)"""
    steps: int = 0
    """optimizer steps; 0: derive them from --epochs"""
    epochs: float = 1.0
    """passes over the accepted records when --steps is 0"""
    batch: int = 8
    """records per micro-batch"""
    grad_accum: int = 1
    """micro-batches per optimizer step (the step's loss is the mean over all their assistant tokens)"""
    lr: float = 1e-3
    """peak learning rate (linear warm-up, cosine decay to 5 % of it)"""
    warmup: int = 0
    """warm-up steps"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping norm; 0: no clipping"""
    lora_r: int = 0
    """LoRA rank on the language model's attention projections (PEFT); 0: full fine-tuning"""
    lora_alpha: int = 16
    """LoRA scale numerator (scale = alpha / r)"""
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    """comma-separated module names of the language model that get LoRA"""
    merge_lora: bool = True
    """also write model/ with the LoRA merged into the weights (a standard checkpoint every command loads)"""
    train_vision: bool = False
    """full fine-tuning also trains the vision tower (default: frozen, projector and language model train)"""
    max_length: int = 0
    """longest sequence in tokens (image tokens included); longer records are rejected, never truncated
    (truncation can cut image placeholders); 0: the model's max_position_embeddings"""
    chat_template: str = "model"
    """'model': the processor's own chat template; 'world': the embedded world's"""
    limit: int = 0
    """read only the first N records of the data (0: all)"""
    seed: int = 0
    """seed of the data order, LoRA initialisation and dropout"""
    save_every: int = 25
    """steps between resumable states (out/.resume/state.pt)"""
    resume: bool = False
    """continue the run already in --out (same config) from its last saved state"""
    overwrite: bool = False
    """delete whatever --out holds and start afresh"""
    device: str = "auto"
    """torch device ('auto': CUDA when available)"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data must be a data spec, got ''")
        if not self.out:
            raise ValueError("out must be a directory, got ''")
        for name, low in (("steps", 0), ("batch", 1), ("grad_accum", 1), ("warmup", 0), ("lora_r", 0),
                          ("lora_alpha", 1), ("max_length", 0), ("limit", 0), ("save_every", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)!r}")
        if self.steps == 0 and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 when steps is 0, got {self.epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0, got "
                             f"{self.weight_decay!r}, {self.max_grad_norm!r}")
        if self.chat_template not in TEMPLATES:
            raise ValueError(f"chat_template must be one of {TEMPLATES}, got {self.chat_template!r}")
        if self.lora_r and not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise ValueError(f"lora_targets must name modules when lora_r > 0, got {self.lora_targets!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other, got both")

    # fields that may differ between a run and its resumption
    RUNTIME = ("resume", "overwrite", "progress", "device")
