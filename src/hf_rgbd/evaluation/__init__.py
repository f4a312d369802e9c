"""hf_rgbd.evaluation."""
