"""The exceptions of ferrocsp.

Every error ferrocsp raises on its own account subclasses :class:`CSPError`, except a timed-out
operation, which raises the builtin :class:`TimeoutError` (nothing was sent or taken).
Messages name the channel and, where known, the process.
"""

from __future__ import annotations

__all__ = [
    "CSPError",
    "ChannelPoisoned",
    "ChannelRetired",
    "Deadlock",
    "ProcessCrashed",
    "WouldBlock",
]


class CSPError(Exception):
    """Base class of ferrocsp's own errors."""


class ChannelPoisoned(CSPError):
    """The channel was poisoned: the operation did not happen and never will on this channel.

    A process that ends with this exception ended cleanly: its result is ``None`` and it
    poisons the channels it was given, so shutdown spreads through the network.
    """


class ChannelRetired(CSPError):
    """The channel or end is retired: all writer ends (or all reader ends) have left.

    For a reader this is end-of-stream: iteration over a reader stops on it. A process that ends
    with this exception ended cleanly and retires the ends it was given.
    """


class WouldBlock(CSPError):
    """A ``*_nowait`` operation could not complete immediately; nothing was sent or taken."""


class Deadlock(CSPError):
    """Every participant of the network waits forever; the message says who waits on what."""


class ProcessCrashed(CSPError):
    """An OS-process backend process died abruptly (killed by a signal or exited early).

    Attributes:
        process: the name of the process.
        signal: the signal that killed it (e.g. ``signal.SIGKILL``), or ``None``.
    """

    def __init__(self, process: str, signal: int | None, message: str | None = None) -> None:
        self.process = process
        self.signal = signal
        if message is None:
            if signal is not None:
                import signal as _signal

                try:
                    sig_name = _signal.Signals(signal).name
                except ValueError:
                    sig_name = f"signal {signal}"
                message = f"process {process!r} killed by {sig_name}"
            else:
                message = f"process {process!r} exited abruptly"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[ProcessCrashed], tuple[str, int | None, str]]:
        return (type(self), (self.process, self.signal, str(self)))
