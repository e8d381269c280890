"""The backbones a run adapts: timm and HF models (backbones), timm's families and their layer presets
(families), hub and local weights (hub, weights), HF config.json and folders checked (hf_config), the offline
pretrained bases (pretrain, text_base).
"""
