"""Shapes to loop layouts: how a fused pass walks memory.

A pointwise pass iterates over its domain (the broadcast of every value's shape). Each
operand is right-aligned against the domain, as torch broadcasts, and gets stride 0 along
the dims it is broadcast in. Adjacent dims that every operand walks alike are merged
(TensorIterator's coalescing); the last merged dim is a *run* in which each operand is
either contiguous (stride 1) or constant (stride 0), so the inner loop is a plain vector
loop and a broadcast operand is loaded once per run.

A reduction over contiguous dims views its input as [outer, reduced, inner]; an operand of
the group is contiguous or broadcast in each of those three parts (`part_strides`).
"""

from __future__ import annotations

from dataclasses import dataclass


def numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def broadcast_shapes(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """torch.broadcast_shapes; a ValueError when two shapes do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for index, size in enumerate(aligned(shape, rank)):
            if size != 1 and out[index] not in (1, size):
                raise ValueError(f"shapes {shapes} do not broadcast")
            out[index] = size if size != 1 else out[index]
    return tuple(out)


def aligned(shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """`shape` right-aligned to `rank` dims (leading 1s), as broadcasting reads it."""
    return (1,) * (rank - len(shape)) + tuple(shape)


def broadcast_strides(shape: tuple[int, ...], domain: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a contiguous `shape` read at every index of `domain`."""
    padded = aligned(shape, len(domain))
    strides = [0] * len(domain)
    step = 1
    for index in reversed(range(len(domain))):
        if padded[index] == domain[index] and domain[index] != 1:
            strides[index] = step
            step *= padded[index]
    return tuple(strides)


@dataclass(frozen=True, slots=True)
class RunLayout:
    """The domain as [prefix..., run]: `run` contiguous elements per prefix index."""

    prefix: tuple[int, ...]  # merged outer dims (empty: one flat run over everything)
    run: int
    prefix_strides: dict[str, tuple[int, ...]]  # operand -> element stride per prefix dim
    run_strides: dict[str, int]  # operand -> 1 (contiguous in the run) or 0 (constant)

    @property
    def runs(self) -> int:
        return numel(self.prefix)

    @property
    def flat(self) -> bool:
        return not self.prefix

    def constant_everywhere(self, name: str) -> bool:
        return self.run_strides[name] == 0 and not any(self.prefix_strides[name])


def run_layout(domain: tuple[int, ...], operands: dict[str, tuple[int, ...]]) -> RunLayout:
    """The coalesced layout of a pass over `domain` reading `operands` (name -> shape)."""
    dims = [d for d in range(len(domain)) if domain[d] != 1]
    sizes = [domain[d] for d in dims]
    strides = {
        name: [broadcast_strides(shape, domain)[d] for d in dims]
        for name, shape in operands.items()
    }
    merged_sizes: list[int] = []
    merged: dict[str, list[int]] = {name: [] for name in operands}
    for index, size in enumerate(sizes):
        can_merge = bool(merged_sizes) and all(
            merged[name][-1] == strides[name][index] * size for name in operands
        )
        if can_merge:
            merged_sizes[-1] *= size
            for name in operands:
                merged[name][-1] = strides[name][index]
        else:
            merged_sizes.append(size)
            for name in operands:
                merged[name].append(strides[name][index])
    if not merged_sizes:  # a one-element domain
        return RunLayout((), 1, {n: () for n in operands}, {n: 0 for n in operands})
    return RunLayout(
        prefix=tuple(merged_sizes[:-1]),
        run=merged_sizes[-1],
        prefix_strides={n: tuple(s[:-1]) for n, s in merged.items()},
        run_strides={n: s[-1] for n, s in merged.items()},
    )


@dataclass(frozen=True, slots=True)
class ReductionLayout:
    """A reduction's input as [outer, reduced, inner] (dims `first` to `last` reduced)."""

    shape: tuple[int, ...]
    first: int
    last: int  # exclusive

    @property
    def outer(self) -> int:
        return numel(self.shape[: self.first])

    @property
    def reduced(self) -> int:
        return numel(self.shape[self.first : self.last])

    @property
    def inner(self) -> int:
        return numel(self.shape[self.last :])

    def kept_shape(self) -> tuple[int, ...]:
        """The reduced value's shape with keepdim=True."""
        return self.shape[: self.first] + (1,) * (self.last - self.first) + self.shape[self.last :]

    def full_strides(self, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
        """(outer, reduced, inner) strides of an operand read at full-shape positions."""
        parts = [
            self.shape[: self.first],
            self.shape[self.first : self.last],
            self.shape[self.last :],
        ]
        return part_strides(shape, parts)

    def reduced_strides(
        self, shape: tuple[int, ...], value_shape: tuple[int, ...]
    ) -> tuple[int, int, int] | None:
        """(outer, 0, inner) strides of an operand read at the positions of a reduced value
        of shape `value_shape` (keepdim or not)."""
        outer_part = self.shape[: self.first]
        inner_part = self.shape[self.last :]
        if value_shape == self.kept_shape():
            parts = [outer_part, (1,) * (self.last - self.first), inner_part]
        elif value_shape == outer_part + inner_part:
            parts = [outer_part, (), inner_part]
        else:
            return None
        return part_strides(shape, parts)


def part_strides(
    shape: tuple[int, ...], parts: list[tuple[int, ...]]
) -> tuple[int, int, int] | None:
    """Strides of a contiguous `shape`, right-aligned against the concatenated `parts`,
    one per part: 0 where it is broadcast over the whole part; None when it is broadcast
    over only some of a part's dims (no single stride walks it)."""
    context = tuple(size for part in parts for size in part)
    if len(shape) > len(context):
        return None
    padded = aligned(shape, len(context))
    strides = [0, 0, 0]
    step = 1
    position = len(context)
    for index in reversed(range(len(parts))):
        part = parts[index]
        mine = padded[position - len(part) : position]
        position -= len(part)
        if mine == part:
            strides[index] = step if numel(part) > 1 else 0
            step *= numel(part)
        elif any(size != 1 for size in mine):
            return None
    return strides[0], strides[1], strides[2]


def contiguous_dims(dims: tuple[int, ...]) -> tuple[int, int] | None:
    """(first, last) when `dims` is a run of consecutive dims, else None."""
    if not dims:
        return None
    ordered = sorted(dims)
    if ordered != list(range(ordered[0], ordered[-1] + 1)):
        return None
    return ordered[0], ordered[-1] + 1
