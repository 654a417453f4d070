"""Triton kernels of liveact_kernels, one module per op family; each `<op>_fwd_triton` takes the arguments of
torch.ops.liveact.<op>_fwd and runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1).
`cache_attention` is the FP8 attention over the ConvKV cache (RoPE applied while loading)."""
