"""Parameter-efficient adaptation of the frozen FM (PEFT baselines): LoRA adapters."""

from reprodistill.peft.lora import LoRAConv2d, LoRALinear, inject_lora

__all__ = ["LoRAConv2d", "LoRALinear", "inject_lora"]
