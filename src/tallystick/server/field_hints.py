"""The "did you mean" hint of a missing body field, found among the keys that the body sent.

Also how pydantic error locations mark union members, which the error messages skip.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from tallystick.server.schemas import accepted_keys, field_keys

# An object with more keys than this gets no hint, and an error lists hints for this many
# missing fields at most. difflib compares the missing field's name with every key, and a body of
# hundreds of thousands of junk keys would otherwise hold the event loop for seconds.
MAX_HINT_KEYS = 200
MAX_HINTS = 10


def _is_union_tag(part: Any) -> bool:
    """Return whether a pydantic error location part is a union member's tag, not a field."""
    return isinstance(part, str) and (part[:1].isupper() or part.startswith("function-"))


def field_location(problem: Mapping[str, Any]) -> list[Any]:
    """Return a pydantic problem's location without the union member tags in it.

    The key of a misspelled_field problem is the key as sent, which may start with a capital
    letter as the tags do (Name for name), so it is kept.
    """
    location = list(problem.get("loc", ()))
    key = location.pop() if problem.get("type") == "misspelled_field" and location else None
    fields = [part for part in location if not _is_union_tag(part)]
    return fields if key is None else [*fields, key]


def misspelling_hint(body: Any, body_type: Any, location: list[Any]) -> str:
    """Return " (the body has 'eventNme'; did you mean 'eventName'?)" when a close key exists.

    Keys that a field of the object accepts are never suggested, because they were sent for that
    field, as inputPerMillionTokens is next to a missing outputPerMillionTokens.
    """
    if not location or not isinstance(location[-1], str):
        return ""
    valid_keys = _accepted_keys_at(body_type, location[:-1])
    if valid_keys is None:
        return ""
    parent = body
    for part in location[:-1]:
        if isinstance(parent, dict) and isinstance(part, str) and part in parent:
            parent = parent[part]
        elif isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
            parent = parent[part]
        elif isinstance(part, str) and _is_union_tag(part):
            continue
        else:
            return ""
    if not isinstance(parent, dict) or len(parent) > MAX_HINT_KEYS:
        return ""
    missing_key = location[-1]
    candidates = [key for key in parent if isinstance(key, str) and key != missing_key and key not in valid_keys]
    close = difflib.get_close_matches(missing_key, candidates, n=1, cutoff=0.6)
    if not close:
        lowered = [key for key in candidates if key.lower() == missing_key.lower()]
        close = lowered[:1]
    if not close:
        return ""
    return f" (the body has '{close[0]}'; did you mean '{missing_key}'?)"


def _accepted_keys_at(body_type: Any, location: list[Any]) -> frozenset[str] | None:
    """Return every key that the models of the object at `location` accept, or None if unknown.

    The walk follows model fields, list items and dict values from `body_type`. A union adds
    the keys of all its models, since a union tag in the location may not name one of them.
    """
    candidates = _unwrapped(body_type)
    for part in location:
        if _is_union_tag(part):
            continue
        inner: list[Any] = []
        for candidate in candidates:
            for annotation in _inner_types(candidate, part):
                inner.extend(_unwrapped(annotation))
        candidates = inner
    models = [candidate for candidate in candidates if isinstance(candidate, type) and issubclass(candidate, BaseModel)]
    if not models:
        return None
    return frozenset().union(*(accepted_keys(model) for model in models))


def _inner_types(container: Any, part: Any) -> list[Any]:
    """Return the types that the value at key or index `part` of a `container` value may have."""
    if isinstance(container, type) and issubclass(container, BaseModel):
        if not isinstance(part, str):
            return []
        return [field.annotation for name, field in container.model_fields.items() if part in field_keys(name, field)]
    origin = get_origin(container)
    arguments = [argument for argument in get_args(container) if argument is not Ellipsis]
    if isinstance(part, int) and origin in (list, tuple, set, frozenset, Sequence):
        return arguments
    if isinstance(part, str) and origin in (dict, Mapping) and len(arguments) == 2:
        return [arguments[1]]
    return []


def _unwrapped(annotation: Any) -> list[Any]:
    """Return the types an annotation allows, with Annotated, Optional and unions taken apart."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrapped(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [item for argument in get_args(annotation) for item in _unwrapped(argument)]
    return [annotation]
