"""AdaLoRA through PEFT, with the regulariser and the rank allocator wired into the recipe."""
