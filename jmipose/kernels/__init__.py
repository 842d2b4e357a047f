"""Triton kernels, one module per op: pure functions on tensors, no autograd, no argument checks.

Imported lazily by ``jmipose.ops`` only when the Triton backend is chosen, so jmipose works without
triton installed.  On CPU tensors they run under ``TRITON_INTERPRET=1`` (tests do this).
"""
