"""peftlab's importance-based rank controllers over PEFT LoRA layers (method ``adaptive``)."""
