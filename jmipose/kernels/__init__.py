"""Triton kernels, one module per op: pure functions on tensors, no autograd, no argument checks.

Imported lazily by ``jmipose.ops`` only when the Triton backend is chosen, so jmipose works without
triton installed.  On CPU tensors they run under ``TRITON_INTERPRET=1`` (tests do this).  Triton
launches on the current CUDA device: a caller enters the tensors' device first (``jmipose.ops`` does,
with ``_backends.device_scope``).  Each module has the same host-side names: ``Blocks`` (the tiles of
one kernel), ``LaunchConfig`` (the tiles of all the op's kernels, one call's launch configuration) and
``launch_config(...)``, the one function that picks it.
"""
