"""hf-rgbd: RGB-D (colour + depth) multimodal learning and adversarial robustness on Hugging Face.

Importing the package registers its configurations, processors and models with the transformers Auto classes.
"""

__version__ = "0.1.0.dev0"
