"""The exception hierarchy, error messages, and bad arguments rejected at the call."""

from __future__ import annotations

import pytest

import ferrocsp as csp

pytestmark = pytest.mark.timeout(20)


# --------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    "exc", ["ChannelPoisoned", "ChannelRetired", "WouldBlock", "Deadlock", "ProcessCrashed"]
)
def test_errors_subclass_csp_error(exc: str) -> None:
    cls = getattr(csp, exc)
    assert issubclass(cls, csp.CSPError)
    assert issubclass(csp.CSPError, Exception)


def test_errors_are_distinct() -> None:
    classes = {csp.ChannelPoisoned, csp.ChannelRetired, csp.WouldBlock, csp.Deadlock}
    assert len(classes) == 4
    assert not issubclass(csp.ChannelPoisoned, csp.ChannelRetired)
    assert not issubclass(csp.ChannelRetired, csp.ChannelPoisoned)
    assert not issubclass(csp.WouldBlock, (csp.ChannelPoisoned, csp.ChannelRetired))


def test_timeout_is_builtin_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        csp.Channel().read(timeout=0.001)


def test_csp_error_catches_channel_errors() -> None:
    ch = csp.Channel()
    with pytest.raises(csp.CSPError):
        ch.read_nowait()
    ch.poison()
    with pytest.raises(csp.CSPError):
        ch.read()


# --------------------------------------------------------------------------- messages


def test_messages_name_the_channel() -> None:
    ch = csp.Channel(name="msg-chan")
    with pytest.raises(csp.WouldBlock, match="msg-chan"):
        ch.read_nowait()
    ch.poison()
    with pytest.raises(csp.ChannelPoisoned, match="msg-chan"):
        ch.write(1)

    retired = csp.Channel(name="msg-retired")
    retired.writer().retire()
    with pytest.raises(csp.ChannelRetired, match="msg-retired"):
        retired.read()


def test_retired_end_message_names_the_channel() -> None:
    ch = csp.Channel(name="end-msg")
    w = ch.writer()
    w.retire()
    with pytest.raises(csp.ChannelRetired, match="end-msg"):
        w.write(1)


# --------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("capacity", [-1, -100])
def test_negative_capacity_value_error(capacity: int) -> None:
    with pytest.raises(ValueError, match=r"(?i)capacity"):
        csp.Channel(capacity)


@pytest.mark.parametrize("capacity", [1.5, 2.0, "3", None, True, False, [1]])
def test_non_int_capacity_type_error(capacity: object) -> None:
    with pytest.raises(TypeError, match=r"(?i)capacity"):
        csp.Channel(capacity)  # type: ignore[arg-type]


def test_capacity_keyword_type_error() -> None:
    with pytest.raises(TypeError):
        csp.Channel(capacity="0")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- timeout


def _timed_ops(ch: csp.Channel, timeout: object) -> list[object]:
    r = ch.reader()
    w = ch.writer()
    return [
        lambda: ch.read(timeout=timeout),
        lambda: ch.write(1, timeout=timeout),
        lambda: r.read(timeout=timeout),
        lambda: w.write(1, timeout=timeout),
    ]


@pytest.mark.parametrize("op_index", range(4))
@pytest.mark.parametrize("timeout", [-0.001, -1, -1e9, float("-inf")])
def test_negative_timeout_value_error(op_index: int, timeout: float) -> None:
    ch = csp.Channel(1)
    op = _timed_ops(ch, timeout)[op_index]
    with pytest.raises(ValueError, match=r"(?i)timeout"):
        op()  # type: ignore[operator]
    assert ch.stats().buffered == 0  # nothing was sent


@pytest.mark.parametrize("op_index", range(4))
@pytest.mark.parametrize("timeout", ["1", b"1", [1], object()])
def test_non_number_timeout_type_error(op_index: int, timeout: object) -> None:
    ch = csp.Channel(1)
    op = _timed_ops(ch, timeout)[op_index]
    with pytest.raises(TypeError, match=r"(?i)timeout"):
        op()  # type: ignore[operator]
    assert ch.stats().buffered == 0


def test_bad_timeout_rejected_before_blocking_with_partner_waiting() -> None:
    """A bad timeout never delivers the value, even if delivery were possible."""
    ch = csp.Channel(1)
    ch.write("kept")
    with pytest.raises(ValueError, match=r"(?i)timeout"):
        ch.read(timeout=-1)
    assert ch.read_nowait() == "kept"


# --------------------------------------------------------------------------- retired ends


def test_every_op_on_retired_ends_raises_retired() -> None:
    ch = csp.Channel(2)
    r, w = ch.reader(), ch.writer()
    keep_r, keep_w = ch.reader(), ch.writer()  # the channel itself stays open
    r.retire()
    w.retire()
    for op in (
        r.read,
        r.read_nowait,
        lambda: r.read(timeout=0.01),
        lambda: next(iter(r)),
        lambda: w.write(1),
        lambda: w.write_nowait(1),
        lambda: w.write(1, timeout=0.01),
    ):
        with pytest.raises(csp.ChannelRetired):
            op()
    assert not ch.stats().retired
    keep_w.write("still open")
    assert keep_r.read() == "still open"


# --------------------------------------------------------------------------- processes


@pytest.mark.parametrize("bad", [1, "proc", None, [lambda: 1], csp.Channel()])
@pytest.mark.parametrize("combinator", ["Par", "Seq"])
def test_combinators_reject_non_callables(combinator: str, bad: object) -> None:
    cls = getattr(csp, combinator)
    with pytest.raises(TypeError):
        cls(bad)
    with pytest.raises(TypeError):
        cls(lambda: 1, bad)


@pytest.mark.parametrize("bad", [1, "proc", None, [lambda: 1]])
def test_spawn_rejects_non_callable(bad: object) -> None:
    with pytest.raises(TypeError):
        csp.Spawn(bad)  # type: ignore[arg-type]


def test_non_callable_rejected_before_anything_runs() -> None:
    ran = []
    with pytest.raises(TypeError):
        csp.Par(lambda: ran.append(1), 42)
    assert ran == []


@pytest.mark.parametrize("timeout", [True, False])
def test_bool_timeout_type_error(timeout: bool) -> None:
    ch = csp.Channel(1)
    with pytest.raises(TypeError, match=r"(?i)timeout"):
        ch.read(timeout=timeout)
    with pytest.raises(TypeError, match=r"(?i)timeout"):
        ch.write(1, timeout=timeout)


def test_nan_timeout_value_error() -> None:
    ch = csp.Channel()
    with pytest.raises(ValueError, match=r"(?i)timeout"):
        ch.read(timeout=float("nan"))
    with pytest.raises(ValueError, match=r"(?i)timeout"):
        ch.write(1, timeout=float("nan"))


def test_non_str_name_type_error() -> None:
    with pytest.raises(TypeError, match=r"(?i)name"):
        csp.Channel(name=3)  # type: ignore[arg-type]


def test_set_default_backend_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no-such-backend"):
        csp.set_default_backend("no-such-backend")
    with pytest.raises(TypeError):
        csp.set_default_backend(3)  # type: ignore[arg-type]
    csp.set_default_backend("thread")


def test_join_timeout_bad_input() -> None:
    h = csp.Spawn(lambda: 1)
    with pytest.raises(ValueError, match=r"(?i)timeout"):
        h.join(timeout=-1)
    with pytest.raises(TypeError, match=r"(?i)timeout"):
        h.join(timeout="1")  # type: ignore[arg-type]
    assert h.join() == 1
