"""First-fit allocator over one registered slab (the EC receive buffer, the KV send buffer).

vLLM's consumer hands each reservation a range of its registered slab and answers "buffer pool
is full" when none fits; this is the same contract at simulator scale.
"""

from __future__ import annotations

ALIGN = 64


class SlabFull(RuntimeError):
    pass


class Slab:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, length), sorted, coalesced
        self._used: dict[int, int] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self._used.values())

    def alloc(self, nbytes: int) -> int:
        need = max(ALIGN, (nbytes + ALIGN - 1) // ALIGN * ALIGN)
        for i, (off, length) in enumerate(self._free):
            if length >= need:
                if length == need:
                    del self._free[i]
                else:
                    self._free[i] = (off + need, length - need)
                self._used[off] = need
                return off
        raise SlabFull(
            f"EC consumer buffer pool is full ({nbytes} bytes requested, "
            f"{self.size - self.used_bytes} of {self.size} free, fragmented)"
        )

    def free(self, offset: int) -> None:
        length = self._used.pop(offset, None)
        if length is None:
            return
        self._free.append((offset, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for off, ln in self._free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + ln)
            else:
                merged.append((off, ln))
        self._free = merged
