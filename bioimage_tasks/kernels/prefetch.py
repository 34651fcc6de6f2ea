"""A software prefetch for compiled kernels: `prefetch(array, index)` asks the CPU to bring the
cache line of `array`'s element at flat `index` (a C-contiguous array) into cache, without
waiting for it and without faulting (an address past the array is harmless). The hardware
prefetchers stop at each 4 KB page; a kernel that reads many rows at once and then computes
on them can fetch its next rows during that computation instead of after it."""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, array, index):
    """llvm.prefetch (read, high locality, data cache) of `array`'s element at flat `index`."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None
    signature = types.void(array, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
        function = cgutils.get_or_insert_function(
            builder.module, function_type, "llvm.prefetch.p0i8"
        )
        builder.call(function, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(nogil=True, cache=True, inline="always")
def next_row_group(shape, z, y, edge):
    """Flat index of the first voxel of the group of `edge` x `edge` rows (planes z.., rows y..)
    after the one at (z, y) of a (depth, height, width) array, whole groups only, or -1."""
    depth, height, width = shape
    if y + 2 * edge <= height:
        return (z * height + y + edge) * width
    if z + 2 * edge <= depth and height >= edge:
        return (z + edge) * height * width
    return -1


@numba.njit(nogil=True, cache=True, inline="always")
def prefetch_rows(cube, first, x, edge):
    """Prefetch column `x` of the `edge` x `edge` rows of the C-ordered 3-D `cube` whose first
    voxel is at flat index `first` (`next_row_group`)."""
    height, width = cube.shape[1], cube.shape[2]
    for dz in range(edge):
        for dy in range(edge):
            prefetch(cube, first + (dz * height + dy) * width + x)
