"""pytest-benchmark cases of op B, ``joint_motion_attention`` (both cross-attention directions) at the shapes of
``jmipose.bench.motion_attention``; how to run them: ``jmipose.bench.pytest_view``."""

from jmipose.bench.pytest_view import benchmark_test

test_joint_motion_attention = benchmark_test("joint_motion_attention")
