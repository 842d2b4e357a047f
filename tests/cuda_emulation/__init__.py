"""The CPU emulation of the CUDA runtime that runs csrc/<op>/cuda.cu in tests (see README.md, build.py)."""
