"""The export's order on PostgreSQL: every result by id, newest first, as the pages go.

The export reads blocks of items: pre-rendered runs (`export_chunks`) and rows
rendered as it goes. Each block is newest first inside, and its highest and
lowest ids are known, but blocks of different sources can overlap in ids: a
result's id is drawn when its transaction allocates ids, its arrival time
(which picks the partition and the live cut) when the transaction began, and
two writers in flight can take them in opposite orders. Streaming partition
after partition would then put a few results out of id order where two
partitions (or a run rendered behind the live cut and the rows after it) meet,
and the export would disagree with the pages of `/api/results`, which are in
id order across partitions.

So the blocks are merged by id: a block whose lowest id is above everything not
yet sent goes out whole (the usual case, no item is looked at); a block that
overlaps another is split at the other's highest id, reading the ids of its
items from their text (`item_id`), and the rest goes back into the merge.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator
from dataclasses import dataclass

_ID_AT = len('{"id" : ')  # json_build_object's text: '{"id" : 123, "ip" : ...'


def item_id(text: str) -> int:
    """The id of one item rendered by `queries.ITEM_JSON`."""
    return int(text[_ID_AT : text.index(",", _ID_AT)])


@dataclass(slots=True)
class Block:
    """Items newest first, with their highest and lowest id (and each id when known)."""

    items: list[str]
    hi: int
    lo: int
    ids: list[int] | None = None
    packed: bool = False  # items[0] holds them all, one a line (a run as stored)

    def unpacked(self) -> list[str]:
        return self.items[0].split("\n") if self.packed else self.items


async def merged(streams: list[AsyncIterator[Block]]) -> AsyncIterator[list[str]]:
    """Every item of `streams` by id, newest first. Each stream yields its blocks by
    highest id, newest first (they may overlap each other). Holds one block per
    stream, plus the rest of any block split. A packed block that goes out whole
    goes out as it is: one element of many lines (see `Reads.iter_results`)."""
    heap: list[tuple[int, int, Block, int]] = []  # (-hi, tie-break, block, stream or -1)
    order = 0

    def push(block: Block, stream: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(heap, (-block.hi, order, block, stream))

    async def pull(stream: int) -> None:
        """The stream's next block stands for it and everything after it in the heap."""
        block = await anext(streams[stream], None)
        if block is not None:
            push(block, stream)

    for i in range(len(streams)):
        await pull(i)
    while heap:
        _, _, block, stream = heapq.heappop(heap)
        if stream >= 0:
            await pull(stream)
        if not heap or block.lo > -heap[0][0]:
            yield block.items
            continue
        bound = -heap[0][0]
        items = block.unpacked()
        ids = block.ids if block.ids is not None else [item_id(t) for t in items]
        cut = 0
        while cut < len(ids) and ids[cut] > bound:
            cut += 1
        cut = max(cut, 1)  # never stall on an id given twice
        yield items[:cut]
        if cut < len(ids):
            push(Block(items[cut:], ids[cut], block.lo, ids[cut:]), -1)
