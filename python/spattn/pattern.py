"""`Pattern`: a boolean sparsity pattern stored as CSR, shared by every batch element and head."""

from __future__ import annotations

import threading

import numpy as np
import torch

from . import _checks
from ._core import _C


def _from_core(result, device: torch.device | None = None) -> "Pattern":
    """A Pattern from the core's (rows, cols, row_offsets, col_indices); the arrays are not copied."""
    rows, cols, row_offsets, col_indices = result
    pattern = Pattern._trusted(torch.from_numpy(np.asarray(row_offsets)), torch.from_numpy(np.asarray(col_indices)),
                               (int(rows), int(cols)))
    return pattern if device is None or torch.device(device).type == "cpu" else pattern.to(device)


class Pattern:
    """A boolean matrix of shape ``(n_rows, n_cols)`` in CSR form.

    ``row_offsets`` (int64, ``[n_rows + 1]``) and ``col_indices`` (int64, ``[nnz]``, sorted and unique
    within each row). Values that live on the pattern (scores, probabilities, bias) are tensors of shape
    ``[..., nnz]`` in CSR order. Derived data that kernels need (the transpose, row order) is computed once
    and cached on the pattern. Build one with the generators in :mod:`spattn.patterns` or with
    :meth:`from_dense`, :meth:`from_csr`, :meth:`from_coo`.
    """

    __slots__ = ("_row_offsets", "_col_indices", "_shape", "_cache", "_cache_lock", "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError("build a Pattern with Pattern.from_csr, Pattern.from_dense, Pattern.from_coo "
                        "or a generator in spattn.patterns")

    @classmethod
    def _trusted(cls, row_offsets: torch.Tensor, col_indices: torch.Tensor, shape: tuple[int, int]) -> "Pattern":
        pattern = object.__new__(cls)
        pattern._row_offsets = row_offsets
        pattern._col_indices = col_indices
        pattern._shape = (int(shape[0]), int(shape[1]))
        pattern._cache = {}
        pattern._cache_lock = threading.Lock()
        return pattern

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_csr(cls, row_offsets, col_indices, shape) -> "Pattern":
        """A pattern from CSR arrays, validated: ``row_offsets`` has ``n_rows + 1`` non-decreasing entries
        from 0 to ``nnz``, ``col_indices`` are in range and sorted and unique within each row."""
        rows, cols = _checks.as_shape(shape)
        device = row_offsets.device if isinstance(row_offsets, torch.Tensor) else torch.device("cpu")
        offsets = _checks.as_index_vector(row_offsets, "row_offsets")
        columns = _checks.as_index_vector(col_indices, "col_indices")
        # Checked here, in Python integers: the core's rows + 1 would overflow for rows = 2**63 - 1.
        if offsets.numel() != rows + 1:
            raise ValueError(f"row_offsets must have n_rows + 1 = {rows + 1} entries, got {offsets.numel()}")
        _C.csr_validate(rows, cols, offsets.numpy(), columns.numpy())
        if isinstance(col_indices, torch.Tensor) and col_indices.device != device:
            raise ValueError(f"row_offsets and col_indices must be on the same device, got {device} and "
                             f"{col_indices.device}")
        return cls._trusted(offsets, columns, (rows, cols)).to(device)

    @classmethod
    def from_dense(cls, mask) -> "Pattern":
        """A pattern from a 2-D bool mask (True = the query row attends to the key column)."""
        device = mask.device if isinstance(mask, torch.Tensor) else torch.device("cpu")
        mask = _checks.as_bool_array(mask, "mask", ndim=2)
        return _from_core(_C.csr_from_dense(mask.numpy()), device)

    @classmethod
    def from_coo(cls, rows, cols, shape) -> "Pattern":
        """A pattern from coordinate lists in any order; duplicates are merged."""
        n_rows, n_cols = _checks.as_shape(shape)
        device = rows.device if isinstance(rows, torch.Tensor) else torch.device("cpu")
        row_indices = _checks.as_index_vector(rows, "rows")
        col_indices = _checks.as_index_vector(cols, "cols")
        return _from_core(_C.csr_from_coo(n_rows, n_cols, row_indices.numpy(), col_indices.numpy()), device)

    # ---- properties ------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def nnz(self) -> int:
        return int(self._col_indices.shape[0])

    @property
    def density(self) -> float:
        total = self._shape[0] * self._shape[1]
        return self.nnz / total if total else 0.0

    @property
    def row_offsets(self) -> torch.Tensor:
        return self._row_offsets

    @property
    def col_indices(self) -> torch.Tensor:
        return self._col_indices

    @property
    def device(self) -> torch.device:
        return self._col_indices.device

    def row_lengths(self) -> torch.Tensor:
        """Number of entries of each row, ``[n_rows]``."""
        return self._row_offsets[1:] - self._row_offsets[:-1]

    # ---- derived data, computed once -------------------------------------------------------------------
    def cached(self, key, compute=None):
        """The value cached under ``key``, computing it with ``compute()`` the first time (thread-safe).
        Without ``compute``: the cached value or None, never computing it (code traced by torch.compile
        cannot run the host code that builds a transpose or a plan, but finds one built before)."""
        value = self._cache.get(key)
        if value is None and compute is not None:
            with self._cache_lock:
                value = self._cache.get(key)
                if value is None:
                    value = compute()
                    self._cache[key] = value
        return value

    def _core_args(self) -> tuple:
        cpu = self.cpu()
        return (self._shape[0], self._shape[1], cpu._row_offsets.numpy(), cpu._col_indices.numpy())

    def transposed(self) -> tuple["Pattern", torch.Tensor]:
        """The transposed pattern and ``permutation`` (int64, ``[nnz]``): entry ``t`` of the transpose
        is entry ``permutation[t]`` of this pattern, so ``values_t = values[..., permutation]``."""
        def compute():
            pattern, permutation = _C.csr_transpose(*self._core_args())
            return _from_core(pattern, self.device), torch.from_numpy(np.asarray(permutation)).to(self.device)
        return self.cached("transposed", compute)

    @property
    def T(self) -> "Pattern":
        return self.transposed()[0]

    def rows_by_length(self) -> torch.Tensor:
        """Row indices by decreasing length (ties by row): an order that starts long rows first, for load
        balance in the caller's own loops (no spattn kernel uses it)."""
        return self.cached("rows_by_length", lambda: torch.from_numpy(
            np.asarray(_C.csr_rows_by_length(*self._core_args()))).to(self.device))

    def _plan_arrays(self) -> tuple[torch.Tensor, ...]:
        """``(group_offsets, group_rows, steps, unowned_columns)`` on the pattern's device, from one
        ``_C.csr_plan`` call for the pattern on the CPU: its copies on other devices move those arrays."""
        if self.device.type != "cpu":
            arrays = self.cpu()._plan_arrays()  # fetched first: cached computations must not nest
            return self.cached("plan_arrays", lambda: tuple(x.to(self.device) for x in arrays))
        return self.cached("plan_arrays", lambda: tuple(
            torch.from_numpy(np.asarray(x)) for x in _C.csr_plan(*self._core_args())))

    def plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The execution plan: rows with identical column lists form a group (every row of a Swin window).
        ``(group_offsets [groups + 1], group_rows [n_rows])``, int64 on the pattern's device: the rows of
        group ``g`` are ``group_rows[group_offsets[g]:group_offsets[g + 1]]`` (increasing), its columns those
        of its first row; every row is in exactly one group (rows without entries form one group)."""
        arrays = self._plan_arrays()
        return self.cached("plan", lambda: arrays[:2])

    def plan_schedule(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The plan's schedule for the CUDA tensor-core kernels, built with :meth:`plan` (one call, cached):
        ``(steps [step_count, 4, 2], unowned_columns [m])``, int64 on the pattern's device. Step ``s`` is
        one thread block of 4 warps; ``steps[s, w] = (group, first row)``: warp ``w`` serves rows
        ``first row .. first row + 15`` of the group's rows (``(-1, 0)`` for an idle warp). Groups of up to
        64 rows lie in one step, small groups share steps (up to 64 keys, each group's padded to 16), longer
        groups take a step per 64 rows, groups with more than 64 columns a step of their own.
        ``unowned_columns`` (increasing) are the columns whose entries do not all lie in one group of at most
        64 rows (columns without entries included): the only ones a backward reduces over separately."""
        arrays = self._plan_arrays()
        return self.cached("plan_schedule", lambda: arrays[2:])

    def plan_statistics(self) -> tuple[int, int]:
        """``(groups, rows of the largest group)`` of :meth:`plan`, from the plan on the CPU (no device
        synchronisation); cached."""
        if self.device.type != "cpu":
            statistics = self.cpu().plan_statistics()  # fetched first: cached computations must not nest
            return self.cached("plan_statistics", lambda: statistics)
        group_offsets = self.plan()[0]

        def compute():
            sizes = group_offsets.diff()
            return int(sizes.numel()), int(sizes.max()) if sizes.numel() else 0
        return self.cached("plan_statistics", compute)

    _PREPARED = ("transposed", "plan", "plan_schedule", "plan_statistics")

    def prepare(self) -> "Pattern":
        """Builds now what the kernels derive from the pattern (its transpose, plan, the plan's schedule and
        statistics; cached), so that code traced by torch.compile later finds them: tracing cannot build
        them. Modules and layouts holding a pattern call it. Returns the pattern."""
        self.transposed()
        self.plan()
        self.plan_schedule()
        self.plan_statistics()
        return self

    def is_prepared(self) -> bool:
        """Whether everything :meth:`prepare` builds is cached on this pattern (on its device)."""
        return all(self.cached(key) is not None for key in self._PREPARED)

    # ---- devices and conversions -----------------------------------------------------------------------
    def to(self, device) -> "Pattern":
        """This pattern on ``device``; the same object when it is already there."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device == self.device:
            return self
        # Copies are cached so that moving the same pattern every forward pass costs nothing.
        def compute():
            moved = Pattern._trusted(self._row_offsets.to(device), self._col_indices.to(device), self._shape)
            moved._cache[("on", torch.device("cpu"))] = self.cpu()
            return moved
        return self.cached(("on", device), compute)

    def cpu(self) -> "Pattern":
        return self if self.device.type == "cpu" else self.to("cpu")

    def cuda(self, device=None) -> "Pattern":
        device = torch.device("cuda", device) if isinstance(device, int) else device
        return self.to("cuda" if device is None else device)

    def to_dense(self) -> torch.Tensor:
        """The pattern as a ``[n_rows, n_cols]`` bool tensor (for small patterns: it is N x N)."""
        rows, cols = self._shape
        dense = torch.zeros(rows * cols, dtype=torch.bool, device=self.device)
        row_of_entry = torch.repeat_interleave(torch.arange(rows, device=self.device), self.row_lengths())
        dense[row_of_entry * cols + self._col_indices] = True
        return dense.view(rows, cols)

    def to_sparse_csr(self) -> torch.Tensor:
        """The pattern as a torch sparse CSR tensor of ones (float32)."""
        values = torch.ones(self.nnz, dtype=torch.float32, device=self.device)
        return torch.sparse_csr_tensor(self._row_offsets, self._col_indices, values, self._shape)

    # ---- algebra ---------------------------------------------------------------------------------------
    def _combine(self, other, core_function, symbol: str) -> "Pattern":
        if not isinstance(other, Pattern):
            return NotImplemented
        if other._shape != self._shape:
            raise ValueError(f"other: patterns must have the same shape for '{symbol}', got {self._shape} and "
                             f"{other._shape}")
        o = other.cpu()
        result = core_function(*self._core_args(), o._row_offsets.numpy(), o._col_indices.numpy())
        return _from_core(result, self.device)

    def __and__(self, other) -> "Pattern":
        return self._combine(other, _C.csr_intersection, "&")

    def __or__(self, other) -> "Pattern":
        return self._combine(other, _C.csr_union, "|")

    def equal(self, other: "Pattern") -> bool:
        """Whether both patterns have the same shape and entries."""
        if not isinstance(other, Pattern):
            raise TypeError(f"other must be a Pattern, got {type(other).__name__}")
        if self._shape != other._shape or self.nnz != other.nnz:
            return False
        a, b = self.cpu(), other.cpu()
        return bool(torch.equal(a._row_offsets, b._row_offsets) and torch.equal(a._col_indices, b._col_indices))

    def __repr__(self) -> str:
        return (f"Pattern(shape={self._shape}, nnz={self.nnz}, density={self.density:.3%}, "
                f"device={self.device})")
