"""attriblm: which training examples made my fine-tuned language model do this?"""

__version__ = "0.1.0"
