"""The CUDA backend of the language model (``FastBackend`` in backend.py).

- backend.py: static KV arena, prefill/decode orchestration, CUDA graphs;
- triton_ops.py, gemv.py, pdl.py: the Triton kernels and their launch options;
- torch_ops.py: the same ops in plain torch (CPU, and the slow twin on GPU);
- greedy.py: the device-side greedy loop; vision.py: the vision tower on the GPU;
- reference.py: transformers' forward over the same cache, for the equivalence tests;
- tiny.py: random Qwen3-VL weights in any shape (the 8B for benchmarks).
Imports nothing heavy until a submodule is imported.
"""
