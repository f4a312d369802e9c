"""hf_rgbd.processors."""
