"""Quantized bases: bitsandbytes int8/nf4/fp4 layers (bases), a base quantized while it loads (load), the
4-bit optimizer step (step) and the CPU allocator (allocator).
"""
