"""How much memory decoded images need and whether this process can still get it."""

from __future__ import annotations

from pathlib import Path

from automl_transfer.errors import DatasetError


def available_memory() -> int | None:
    """Return the bytes of memory this process can still get: the system's available memory,
    lowered to what is left under a cgroup (container) limit; ``None`` where neither can be read."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        maximum = (cgroup / "memory.max").read_text().strip()
        if maximum != "max":
            limits.append(int(maximum) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_memory(count: int, image_size: int, origin: str) -> None:
    """Refuse to decode ``count`` images at ``image_size`` when their tensors cannot fit in memory.

    :raises DatasetError: saying how much they need and how much there is.
    """
    needed = count * 3 * image_size * image_size
    available = available_memory()
    if available is not None and needed > available:
        raise DatasetError(
            f"{origin}: its {count} images decoded at {image_size}x{image_size} pixels need {_size(needed)} of memory, "
            f"more than the {_size(max(available, 0))} available; lower image_size in the space"
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
