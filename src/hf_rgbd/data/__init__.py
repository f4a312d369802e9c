"""hf_rgbd.data."""
