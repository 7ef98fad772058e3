"""``ChannelStats``: a snapshot of a channel's counters."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChannelStats"]


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """What ``Channel.stats()`` returns: one consistent snapshot, taken under the channel lock.

    Attributes:
        capacity: buffer size (0 for a rendezvous channel).
        buffered: values waiting in the buffer.
        readers_waiting: readers (and Alts) blocked on the channel.
        writers_waiting: writers (and Alts) blocked on the channel.
        reader_ends: reader ends made and not yet retired.
        writer_ends: writer ends made and not yet retired.
        poisoned: whether the channel is poisoned.
        retired: whether every writer end, or every reader end, made so far has retired.
    """

    capacity: int
    buffered: int
    readers_waiting: int
    writers_waiting: int
    reader_ends: int
    writer_ends: int
    poisoned: bool
    retired: bool
