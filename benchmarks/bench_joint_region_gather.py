"""pytest-benchmark cases of op A, ``joint_region_gather`` (modulated deformable convolution) at the shapes of
``jmipose.bench.region_gather``; how to run them: ``jmipose.bench.pytest_view``."""

from jmipose.bench.pytest_view import benchmark_test

test_joint_region_gather = benchmark_test("joint_region_gather")
