"""hf_rgbd.modeling."""
