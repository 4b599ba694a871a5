"""The host CPU's instruction-set flags that decide which embedding backends can be fast here."""

from __future__ import annotations

from pathlib import Path

# The flags that matter for transformer inference on CPU (x86 names from /proc/cpuinfo `flags`, aarch64
# names from `Features`); everything else on the line is noise in a log.
RELEVANT = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx_ne_convert",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
)

# Any of these: bf16 matrix products run in hardware; without them torch emulates bf16 (slower than fp32).
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16", "avx_ne_convert", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The relevant flags of the first CPU listed (all cores of a host share them); [] if unreadable."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [f for f in RELEVANT if f in present]
    return []


def has_native_bf16(flags: list[str]) -> bool:
    return bool(NATIVE_BF16.intersection(flags))
