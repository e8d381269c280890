"""The offline pretrained bases, trained by the recipe where no hub is reachable: pretrain (a small ViT trained
on one real dataset, cached as safetensors with a manifest; ``peftlab pretrain`` and a study's base) and
text_base (a byte-level BPE tokenizer and a small GPT-2 trained on a corpus).
"""
