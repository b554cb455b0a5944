"""The emulated GPU as the tests see it (the `cuemu` ops of tests/emu/emu_library.cpp, state in
csrc/include/var_fast/emulated_device.h): which GPU it describes, a CUDA graph capture on it, and the
launches a call made. Needs the emulated library loaded (the conftest fixture ``emu_library``)."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, NamedTuple, Tuple

import torch


class DeviceDescription(NamedTuple):
    """What var_fast's launch plans read of a GPU."""
    name: str
    sm_count: int
    cc: Tuple[int, int]
    smem_optin: int  # cudaDevAttrMaxSharedMemoryPerBlockOptin, bytes


H100 = DeviceDescription("h100", 132, (9, 0), 232448)  # sm_90: 227 KiB; the emulator's default
# The GPUs the launch plans are tested on: the SM counts and shared-memory limits of the compiled archs.
DESCRIPTIONS = [
    H100,
    DeviceDescription("a100", 108, (8, 0), 166912),     # sm_80: 163 KiB
    DeviceDescription("rtx4090", 128, (8, 9), 101376),  # sm_89: 99 KiB
    DeviceDescription("a10", 72, (8, 6), 101376),       # sm_86: 99 KiB
    DeviceDescription("l4", 58, (8, 9), 101376),        # 58 SMs
]
BY_NAME = {d.name: d for d in DESCRIPTIONS}
# Not a var_fast target (sm_75 is not compiled): no tensor cores for the kernels, 64 KiB of shared memory;
# only for the launch plans' branches that refuse or avoid them.
T4 = DeviceDescription("t4", 40, (7, 5), 65536)


def set_device(d: DeviceDescription) -> None:
    torch.ops.cuemu.set_device(d.sm_count, d.cc[0], d.cc[1], d.smem_optin)


def current_device() -> DeviceDescription:
    sm, major, minor, smem = torch.ops.cuemu.get_device()
    return DeviceDescription("?", sm, (major, minor), smem)


@contextlib.contextmanager
def described_as(d: DeviceDescription) -> Iterator[DeviceDescription]:
    """The emulated GPU is `d` inside the block, the one before it afterwards."""
    before = current_device()
    set_device(d)
    try:
        yield d
    finally:
        set_device(before)


class Launch(NamedTuple):
    kernel: str  # demangled, e.g. "void var_fast::sampling::sample_rows_kernel<float, false>(...)"
    grid: Tuple[int, int, int]
    block: int
    smem: int    # dynamic shared memory, bytes

    @property
    def name(self) -> str:
        """The kernel's name without namespace, with its template arguments: "sample_rows_kernel<float, false>"."""
        qualified = self.kernel.removeprefix("void ").split("(", 1)[0]
        base = qualified.split("<", 1)[0]
        return base.rsplit("::", 1)[-1] + qualified[len(base):]

    def is_kernel(self, name: str) -> bool:
        """`name` is the kernel's name, or its name with template arguments."""
        return self.name == name or self.name.split("<", 1)[0] == name


def _parse(line: str) -> Launch:
    kernel, grid, block, smem = line.split("\t")
    gx, gy, gz = map(int, grid.split())
    return Launch(kernel, (gx, gy, gz), int(block), int(smem))


@contextlib.contextmanager
def recorded_launches() -> Iterator[List[Launch]]:
    """The list fills, when the block ends, with the emulated launches made inside it, in order."""
    launches: List[Launch] = []
    torch.ops.cuemu.begin_launch_record()
    try:
        yield launches
    finally:
        launches.extend(_parse(line) for line in torch.ops.cuemu.end_launch_record())


def launches_of(launches: List[Launch], kernel: str) -> List[Launch]:
    return [launch for launch in launches if launch.is_kernel(kernel)]


@contextlib.contextmanager
def emulated_capture() -> Iterator[None]:
    """A CUDA graph capture on the emulated GPU: inside it the launchers see a capturing stream, a
    device-to-host read raises, and the block fails at its end if it synchronised with the device
    (``.item()`` and the like: what a real capture cannot contain). Kernels still run at once."""
    torch.ops.cuemu.begin_capture()
    try:
        yield
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the block's own error is the one to report
            torch.ops.cuemu.end_capture()
        raise
    torch.ops.cuemu.end_capture()
