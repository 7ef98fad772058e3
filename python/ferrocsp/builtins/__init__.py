"""Ready-made processes for building networks (JCSP's plugNplay, python-csp's builtins).

Each builtin is a ``@process`` factory: calling it checks the arguments (``TypeError`` /
``ValueError`` at the call) and returns an unstarted process to run with ``Par``::

    import ferrocsp as csp
    from ferrocsp.builtins import Count, Filter, Map, Sink

    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    csp.Par(
        Count(a.writer(), stop=100),                  # 0 .. 99, then end-of-stream
        Map(a.reader(), b.writer(), lambda x: x * x),
        Filter(b.reader(), c.writer(), lambda x: x % 2 == 0),
        Sink(c.reader()),                             # returns how many values it took: 50
    ).run()

Arguments come in the order inputs, outputs, parameters. Inputs are ``Reader`` ends or
channels, outputs ``Writer`` ends or channels, groups of them lists or tuples.

**Shutdown.** Every builtin ends cleanly on poison and on retire, by the process rules:

- *Poison* on any channel a builtin holds ends it, and it poisons all the channels it holds,
  so the whole connected network stops. This works with ends and with plain channels alike.
- *Retire*: a builtin ends when an input reaches end-of-stream (all writer ends of the
  channel retired and its buffer drained), or when all readers of an output have retired;
  it then retires every ``Reader``/``Writer`` end it holds, so end-of-stream flows on
  downstream and "nobody listens" flows back upstream. This needs ends: give each builtin
  ``ch.reader()`` / ``ch.writer()`` (one end per process) when the network should end by
  retire. A plain ``Channel`` argument works for the values and for poison, but it has no end
  to retire: a builtin ending by retire leaves it as it is, and its readers are not told
  (they wait until poisoned).

Exceptions to the rule "ends only by poison or retire": ``Count`` with a ``stop`` ends by
itself (retiring its output end), and ``Sink`` and ``Printer`` return the number of values
they read when their input ends, instead of ``None``. A user function (``Map``, ``Filter``)
that raises makes the process fail, which poisons its channels.

The builtins, by shape:

- sources: ``Generate`` (counts up forever), ``Count`` (``range``-like), ``Clock`` (ticks);
- sinks: ``Sink`` (discards), ``Printer`` (prints);
- pipes: ``Id``, ``Succ``, ``Prefix``, ``Tail``, ``Mult`` (times a constant), ``Map``,
  ``Filter``;
- fan-out: ``Delta`` (copies to every output, sequential or parallel), ``Demux`` (round
  robin);
- fan-in: ``Merge`` (fair choice), ``Mux`` (round robin, the inverse of ``Demux``), ``Zip``
  (tuples), ``Plus`` (sums).

They hold no state outside their arguments and wait only on channels and ``Alt`` guards
(``Clock`` with a ``Timeout`` guard), so they run under every backend.
"""

from __future__ import annotations

from ._builtin import In as In
from ._builtin import Out as Out
from ._fanin import Merge as Merge
from ._fanin import Mux as Mux
from ._fanin import Plus as Plus
from ._fanin import Zip as Zip
from ._fanout import Delta as Delta
from ._fanout import Demux as Demux
from ._pipes import Filter as Filter
from ._pipes import Id as Id
from ._pipes import Map as Map
from ._pipes import Mult as Mult
from ._pipes import Prefix as Prefix
from ._pipes import Succ as Succ
from ._pipes import Tail as Tail
from ._sinks import Printer as Printer
from ._sinks import Sink as Sink
from ._sources import Clock as Clock
from ._sources import Count as Count
from ._sources import Generate as Generate

__all__ = [
    "Clock",
    "Count",
    "Delta",
    "Demux",
    "Filter",
    "Generate",
    "Id",
    "In",
    "Map",
    "Merge",
    "Mult",
    "Mux",
    "Out",
    "Plus",
    "Prefix",
    "Printer",
    "Sink",
    "Succ",
    "Tail",
    "Zip",
]
