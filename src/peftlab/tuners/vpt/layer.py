"""A timm block with visual prompt tokens (Jia et al., ECCV 2022).

Tokens are laid out ``[prefix (cls, registers, distillation) | prompts | patches]``. The block
that inserts (the first) puts its prompts after the prefix tokens; a deep block that follows
replaces the previous block's outputs at the prompt positions with its own prompts; the last
block drops the prompt positions after it, so the final norm and the head see timm's usual
tokens. Prompts are inserted after the position embedding was added: they get none.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptedBlock(nn.Module):
    def __init__(
        self,
        base_layer: nn.Module,
        prompt: nn.Parameter | None,
        num_prefix: int,
        num_prompts: int,
        insert: bool,
        drop: bool,
    ):
        super().__init__()
        self.base_layer = base_layer
        self.prompt = prompt  # (num_prompts, d), or None: a shallow block that passes the prompts' outputs on
        self.num_prefix, self.num_prompts = num_prefix, num_prompts
        self.insert, self.drop = insert, drop

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # x: (B, prefix + patches, d) where this block inserts, else (B, prefix + prompts + patches, d)
        p, n = self.num_prefix, self.num_prompts
        if self.prompt is not None:
            prompt = self.prompt.expand(x.shape[0], -1, -1).to(x.dtype)
            rest = x[:, p:] if self.insert else x[:, p + n :]
            x = torch.cat([x[:, :p], prompt, rest], dim=1)
        x = self.base_layer(x, *args, **kwargs)
        if self.drop:
            x = torch.cat([x[:, :p], x[:, p + n :]], dim=1)
        return x
