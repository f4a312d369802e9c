"""hf_rgbd.attacks."""
