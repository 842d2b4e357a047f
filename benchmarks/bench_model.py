"""pytest-benchmark cases of the JM-Pose model (head fps, whole-model fps, one training step) at the shapes of
``jmipose.bench.model``; how to run them: ``jmipose.bench.pytest_view``."""

from jmipose.bench.pytest_view import benchmark_test

test_model = benchmark_test("model")
