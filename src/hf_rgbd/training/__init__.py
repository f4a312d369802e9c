"""hf_rgbd.training."""
