"""``pycsp.common.toolkit``: processes that connect channels to files and to other programs.

``file_r`` sends a file's lines, ``file_w`` writes what it reads, ``execute`` runs a command
with its standard streams on channels, ``runner`` runs commands read from a channel. The
processes are made with the implementation current at import (``pycsp.current``), as in PyCSP.

Invariants:
- ``file_r`` sends lists of lines: a list ends after a line holding ``sep`` (so with the
  default separator, one line per list); the rest of the file goes as a last list. With
  ``retire_on_eof`` it retires its end after the last one.
- ``execute`` forwards the command's stdout/stderr until both reach end of file, then retires
  the ends it forwarded to (``retire_on_eof``); it never returns before the command's output
  is exhausted.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import IO, Any

from .. import current

__all__ = ["execute", "file_r", "file_w", "runner", "which"]

_process: Any = current.__dict__["process"]
_choice: Any = current.__dict__["choice"]


def which(cmd: str) -> bytes:
    """The path of program ``cmd`` as bytes (``b""`` if not found), as PyCSP's ``which``."""
    path = shutil.which(cmd)
    return path.encode() if path else b""


def _file_r(cout: Any, file: Any, retire_on_eof: bool = True, sep: str = "\n") -> None:
    stream: IO[str] = open(file) if isinstance(file, str) else file  # noqa: SIM115
    try:
        buf: list[str] = []
        for line in iter(stream.readline, ""):
            buf.append(line)
            if sep in line:
                cout(buf)
                buf = []
        if buf:
            cout(buf)
    finally:
        stream.close()
    if retire_on_eof:
        current.__dict__["retire"](cout)


def _file_w(cin: Any, file: Any) -> None:
    stream: IO[str] = open(file, "w") if isinstance(file, str) else file  # noqa: SIM115
    try:
        while True:
            data = cin()
            stream.write("".join(data) if isinstance(data, list) else data)
            stream.flush()
    finally:
        stream.close()


def _runner(cin: Any) -> None:
    while True:
        command, stdin_end, stdout_end, stderr_end = cin()
        current.__dict__["Sequence"](execute(command, stdin_end, stdout_end, stderr_end))


def _feed(stream: Any, channel_input: Any = None) -> None:
    stream.write(channel_input)
    stream.flush()


def _forward(cout: Any, channel_input: Any = None) -> None:
    cout(channel_input)


def _execute(
    command: Any,
    stdinChEnd: Any = None,  # noqa: N803 - PyCSP's parameter names
    stdoutChEnd: Any = None,  # noqa: N803
    stderrChEnd: Any = None,  # noqa: N803
    retire_on_eof: bool = True,
) -> None:
    pipe = subprocess.PIPE
    proc = subprocess.Popen(
        command,
        stdin=pipe if stdinChEnd else None,
        stdout=pipe if stdoutChEnd else None,
        stderr=pipe if stderrChEnd else None,
        text=True,
    )
    new_channel, spawn = current.__dict__["Channel"], current.__dict__["Spawn"]
    guards: list[tuple[Any, Any]] = []
    if stdinChEnd:
        guards.append((stdinChEnd, _choice(_feed)(proc.stdin)))
    outputs: list[tuple[Any, Any]] = []
    for end, stream in ((stdoutChEnd, proc.stdout), (stderrChEnd, proc.stderr)):
        if end:
            ch = new_channel()
            src = ch.reader()
            spawn(file_r(ch.writer(), stream))
            guards.append((src, _choice(_forward)(end)))
            outputs.append((src, end))
    if not outputs:
        proc.wait()
        return
    alt = current.__dict__["Alternation"](guards)
    try:
        while True:
            alt.execute()
    except current.__dict__["ChannelRetireException"]:
        pass  # an output reached end of file
    retire = current.__dict__["retire"]
    for src, end in outputs:
        retire(src)
        if retire_on_eof:
            retire(end)
    proc.wait()


file_r = _process(_file_r)
file_w = _process(_file_w)
runner = _process(_runner)
execute = _process(_execute)
