from peftlab.tuners.lora.model import apply_lora, plan_targets

__all__ = ["apply_lora", "plan_targets"]
