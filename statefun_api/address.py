"""Function addresses and typenames.

A StateFun *typename* is ``"<namespace>/<name>"``; the namespace may itself contain
slashes (the name is what follows the last one). An :class:`Address` is a typename plus an
id: the unit that owns state and receives messages.

Example:
    >>> a = Address.of("com.example/greeter", "alice")
    >>> a.namespace, a.name, a.id, a.typename
    ('com.example', 'greeter', 'alice', 'com.example/greeter')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "SdkAddress", "parse_typename", "make_typename"]


def id_problem(id: object) -> str | None:  # noqa: A002 - StateFun's word
    """Why ``id`` cannot be a function id, or None when it can.

    An id is a non-empty ``str`` that UTF-8 can encode (StateFun's ids are protobuf strings,
    and raystream hashes them as UTF-8 to route them): a lone surrogate, which ``json.loads``
    of an escaped one or ``bytes.decode(errors="surrogateescape")`` can give, is refused
    here rather than failing deep in routing.

    Example:
        >>> id_problem("ann"), id_problem("")
        (None, "a function id must be a non-empty string, got ''")
        >>> print(id_problem("x" + chr(0xDC80)))
        a function id must be valid Unicode, got 'x\\udc80' (a lone surrogate at index 1, ...): repair or drop it first
    """
    if not isinstance(id, str) or not id:
        return f"a function id must be a non-empty string, got {id!r}"
    if id.isascii():
        return None
    try:
        id.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"a function id must be valid Unicode, got {id!r} (a lone surrogate at index {exc.start}, "
            f"as json.loads or errors='surrogateescape' can give): repair or drop it first"
        )
    return None


def parse_typename(typename: str) -> tuple[str, str]:
    """Split ``"namespace/name"`` at its last slash into ``(namespace, name)``.

    Raises:
        ValueError: ``typename`` is missing, has no slash, or an empty part.

    Example:
        >>> parse_typename("io.statefun.types/int")
        ('io.statefun.types', 'int')
    """
    parsed = _PARSED.get(typename) if type(typename) is str else None
    if parsed is not None:
        return parsed
    if not isinstance(typename, str) or not typename:
        raise ValueError(
            f"a typename must be a non-empty 'namespace/name' string, got {typename!r}"
        )
    namespace, slash, name = typename.rpartition("/")
    if not slash:
        raise ValueError(f"typename {typename!r} must be of the form 'namespace/name'")
    if not namespace:
        raise ValueError(f"typename {typename!r} has an empty namespace")
    if not name:
        raise ValueError(f"typename {typename!r} has an empty name")
    if type(typename) is str:
        if len(_PARSED) >= 4096:  # typenames are few; bound the cache anyway
            _PARSED.clear()
        _PARSED[typename] = (namespace, name)
    return namespace, name


_PARSED: dict[str, tuple[str, str]] = {}  # typename -> (namespace, name), valid ones only


def make_typename(namespace: str, name: str) -> str:
    """Join ``namespace`` and ``name`` into a typename, validating both.

    Example:
        >>> make_typename("com.example", "greeter")
        'com.example/greeter'
    """
    typename = f"{namespace}/{name}"
    parse_typename(typename)
    if "/" in name:
        raise ValueError(f"a function name must not contain '/', got {name!r}")
    return typename


@dataclass(frozen=True, order=True, init=False)
class Address:
    """The address of a stateful function instance: ``(namespace, name, id)``.

    Mirrors the SDK's ``SdkAddress``: ``typename`` is a property, and the constructor also
    takes the SDK's fourth field ``typename=`` (checked against namespace and name, not
    stored), so ``SdkAddress(namespace=..., name=..., id=..., typename=...)`` written for
    the SDK builds an equal address. Hashable and orderable so it can key state and
    partition messages.

    Example:
        >>> Address("com.example", "greeter", "bob").typename
        'com.example/greeter'
        >>> SdkAddress(namespace="com.example", name="greeter", id="bob", typename="com.example/greeter")
        Address(namespace='com.example', name='greeter', id='bob')
    """

    namespace: str
    name: str
    id: str

    def __init__(self, namespace: str, name: str, id: str, typename: str | None = None) -> None:  # noqa: A002
        if typename is not None and typename != f"{namespace}/{name}":
            raise ValueError(
                f"Address typename {typename!r} does not match namespace {namespace!r} and name "
                f"{name!r} (expected {namespace + '/' + name!r})"
            )
        object.__setattr__(self, "namespace", namespace)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "id", id)

    @property
    def typename(self) -> str:
        """``"namespace/name"`` of the function type."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, typename: str, id: str) -> Address:
        """Build an address from a typename and an id.

        Example:
            >>> Address.of("a.b/c", "1")
            Address(namespace='a.b', name='c', id='1')
        """
        namespace, name = parse_typename(typename)
        if type(id) is not str or not id.isascii() or not id:
            problem = id_problem(id)
            if problem is not None:
                raise ValueError(problem)
        if cls is not Address:
            return cls(namespace, name, id)
        # the fields set as __init__ sets them, without its call and checks (~3x faster: the
        # dispatcher makes one per address it meets)
        address = _new_address(cls)
        fields = address.__dict__
        fields["namespace"] = namespace
        fields["name"] = name
        fields["id"] = id
        return address

    def __str__(self) -> str:
        return f"{self.typename}/{self.id}"


_new_address = object.__new__

SdkAddress = Address
"""Alias for code written against the official SDK's name."""
