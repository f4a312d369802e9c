"""hf_rgbd.pipelines."""
