# -*- test-case-name: tests.unit.test_protocol -*-
"""
AMP argument types for NEO.

AMP refuses any single value over 64 KiB, while an object record may be
megabytes long.  L{BigBytes} splits a value over several keys
(C{NAME=<count>}, C{NAME.0}, C{NAME.1}, ...) so that records up to
L{MAX_RECORD} travel in one command; the other large arguments (oid lists,
JSON documents) are built on it.
"""

import json

from twisted.protocols import amp

from neo.protocols.errors import ProtocolError, RecordTooLarge

#: The largest value (object record, oid list, ...) a command may carry.
MAX_RECORD = 64 * 1024 * 1024 + 1024
_STEP = amp.MAX_VALUE_LENGTH
_MAX_PIECES = MAX_RECORD // _STEP + 1


class Id8(amp.Argument):
    """An 8-byte OID or TID."""

    def __init__(self, optional=False):
        super().__init__(optional)

    def toString(self, value):
        if len(value) != 8:
            raise ProtocolError(f"an id must be 8 bytes, not {len(value)}")
        return value

    def fromString(self, string):
        if len(string) != 8:
            raise ProtocolError(f"an id must be 8 bytes, not {len(string)}")
        return string


Oid = Tid = Id8


class BigBytes(amp.Argument):
    """
    Bytes up to L{MAX_RECORD} long, split over as many AMP values as needed.

    Argument names using this type must not contain C{-} or C{.}.
    """

    def toBox(self, name, strings, objects, proto):
        value = objects.get(name.decode("ascii"))
        if value is None:
            if self.optional:
                return
            raise ProtocolError(f"missing argument {name!r}")
        value = self.encode(value)
        if len(value) > MAX_RECORD:
            raise RecordTooLarge(
                f"{name.decode()} is {len(value)} bytes, more than the"
                f" {MAX_RECORD} bytes a record may have")
        if len(value) <= _STEP:
            # Most values: one piece (or none), without the loop.
            strings[name] = b"1" if value else b"0"
            if value:
                strings[name + b".0"] = value
            return
        count = (len(value) + _STEP - 1) // _STEP
        strings[name] = b"%d" % count
        for i in range(count):
            strings[b"%s.%d" % (name, i)] = value[i * _STEP:(i + 1) * _STEP]

    def fromBox(self, name, strings, objects, proto):
        count = strings.pop(name, None)
        if count is None:
            if self.optional:
                objects[name.decode("ascii")] = None
                return
            raise ProtocolError(f"missing argument {name!r}")
        if count == b"1":
            piece = strings.pop(name + b".0", None)
            if piece is None:
                raise ProtocolError(f"{name!r} has missing pieces")
            objects[name.decode("ascii")] = self.decode(piece)
            return
        try:
            count = int(count)
        except ValueError:
            raise ProtocolError(f"bad piece count for {name!r}")
        if not 0 <= count <= _MAX_PIECES:
            raise ProtocolError(f"{name!r} is larger than MAX_RECORD")
        try:
            value = b"".join(strings.pop(b"%s.%d" % (name, i))
                             for i in range(count))
        except KeyError:
            raise ProtocolError(f"{name!r} has missing pieces")
        objects[name.decode("ascii")] = self.decode(value)

    def encode(self, value):
        return bytes(value)

    def decode(self, value):
        return value


class OidList(BigBytes):
    """A list of 8-byte ids (OIDs or TIDs), of any practical length."""

    def encode(self, value):
        return b"".join(value)

    def decode(self, value):
        if len(value) % 8:
            raise ProtocolError("an id list must be a multiple of 8 bytes")
        return [value[i:i + 8] for i in range(0, len(value), 8)]


class Json(BigBytes):
    """A JSON document (node lists, partition tables, maps)."""

    def encode(self, value):
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    def decode(self, value):
        try:
            return json.loads(value)
        except ValueError as e:
            raise ProtocolError(f"bad JSON argument: {e}")


class Enum(amp.Unicode):
    """A member of a L{str}-valued C{enum.Enum}, sent by name."""

    def __init__(self, enumType, optional=False):
        super().__init__(optional)
        self._enum = enumType

    def toString(self, value):
        return super().toString(self._enum(value).value)

    def fromString(self, string):
        text = super().fromString(string)
        try:
            return self._enum(text)
        except ValueError:
            raise ProtocolError(f"{text!r} is not a {self._enum.__name__}")
