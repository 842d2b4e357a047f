"""Datasets: PoseTrack loaders, the synthetic video benchmark (``jmipose.data.synthetic``) and the
streaming video reader."""
