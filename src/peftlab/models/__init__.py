"""The backbones a run adapts: timm and HF models (backbones; ``model_inputs``, what the data path needs of
one), timm's families and their layer presets (families), which block a module name sits in (blocks), hub
and local weights (hub, weights), HF config.json, tokenizers and folders checked (hf_config). The offline
pretrained bases are trained by the recipe: ``peftlab.training.bases``.
"""

from peftlab.utils.libraries import wandb_when_used

wandb_when_used()  # before any timm import of the package's modules (timm imports wandb wherever it is installed)
