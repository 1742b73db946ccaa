"""xformers' sparse-attention API on top of spattn: code written for xformers' Swin example runs by
changing its imports::

    import spattn.compat.xformers.attention_patterns as AP
    from spattn.compat.xformers import SparseCS, scaled_dot_product_attention
"""

from . import attention_patterns
from .sparse_cs import SparseCS, scaled_dot_product_attention

__all__ = ["attention_patterns", "SparseCS", "scaled_dot_product_attention"]
