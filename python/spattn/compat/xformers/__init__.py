"""xformers' sparse-attention API on top of spattn: code written for xformers' Swin example runs by
changing its imports."""

from . import attention_patterns

__all__ = ["attention_patterns"]
