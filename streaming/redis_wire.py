"""Redis commands of thousands of arguments, packed in one pass and sent on one connection.

redis-py packs every argument of every command in Python (type checks, encoding,
one small bytes object each): for a micro-batch of 5,000 users that is some 30,000
arguments and was the largest single cost of the Redis state store and online
writes. The stream processor's bulk commands are all bytes or str it built itself,
so :func:`command` packs them with one ``join``; replies are read by the client's
own parser (hiredis when installed, which ``recast`` depends on).
"""

from __future__ import annotations

from typing import Iterable, Sequence

Arg = bytes | str | int


def bulk(value: bytes) -> bytes:
    """One argument in the wire protocol (RESP bulk string)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _as_bytes(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, int) and not isinstance(a, bool):
        return b"%d" % a
    raise TypeError(f"a Redis argument is bytes, str or int, not {type(a).__name__}")


def command(args: Sequence[Arg]) -> bytes:
    """One command (``[name, *args]``) in the wire protocol."""
    encoded = [a if type(a) is bytes else a.encode() if type(a) is str else _as_bytes(a) for a in args]
    return b"*%d\r\n" % len(encoded) + b"".join([b"$%d\r\n%b\r\n" % (len(b), b) for b in encoded])


class Pending:
    """Commands sent on a connection of their own, whose replies are read later by :meth:`wait`.

    The caller does other work while Redis executes them (the stream processor encodes and
    writes the next view meanwhile). :meth:`wait` reads one reply per command, in order; a
    reply that is an error is returned as the exception object, not raised, so every reply
    is read and the connection stays usable (:func:`check` raises the first). Any transport
    failure, or :meth:`abandon` before the replies were read, drops the connection: a
    half-read reply must never be read as the answer of the next command.
    """

    def __init__(self, client, commands: Iterable[bytes], replies: int | None = None) -> None:
        """``replies``: how many replies to read when a packed piece holds several commands."""
        packed = list(commands)
        self.client, self.count = client, len(packed) if replies is None else replies
        self.conn = client.connection_pool.get_connection()
        try:
            self.conn.send_packed_command([b"".join(packed)])
        except BaseException:
            self._release(broken=True)
            raise

    def wait(self) -> list:
        from redis.exceptions import ResponseError

        if self.conn is None:
            raise RuntimeError("these replies were already read or abandoned")
        out = []
        try:
            for _ in range(self.count):
                try:
                    out.append(self.conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            self._release(broken=True)
            raise
        self._release(broken=False)
        return out

    def abandon(self) -> None:
        """Give the connection back without reading the replies (it is closed: they are not lost to others)."""
        if self.conn is not None:
            self._release(broken=True)

    def _release(self, broken: bool) -> None:
        conn, self.conn = self.conn, None
        if broken:
            conn.disconnect()
        self.client.connection_pool.release(conn)


def execute(client, commands: Iterable[bytes]) -> list:
    """Send packed commands in one write and read one reply each, in order (see :class:`Pending`)."""
    return Pending(client, commands).wait()


def check(replies: list) -> list:
    """The replies, or the first error among them raised."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies
