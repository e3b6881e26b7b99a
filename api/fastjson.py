"""Answer with the bytes FastAPI's ``response_model`` would send, encoded once.

A sync endpoint that returns a model makes FastAPI validate it again against
``response_model`` and serialise it -- in the thread pool, a second hop per request. The
hot read endpoints (the subscription list and show) return :func:`plain_response`
instead: the fields as plain dicts in the model's field order under its JSON keys
(:func:`plain`), encoded by pydantic-core's ``to_json`` -- the bytes
``TypeAdapter(model).dump_json(model(**fields), by_alias=True)`` gives (what FastAPI
sends), with the same ``content-type``, without building a model per row (which cost as
much as the encoding). The decorator keeps ``response_model``, so the OpenAPI document is
unchanged (FastAPI does not validate a ``Response`` an endpoint returns).
``tests/api/test_fast_responses.py`` compares the bytes with the models' over
subscriptions in every state, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from functools import cache
from operator import itemgetter
from typing import Any

from fastapi import Response
from pydantic_core import to_json


@cache
def _shape(model: Any) -> tuple[Any, tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """``model``'s fields in order: a getter of their values from a dict, their JSON keys
    (``by_alias``), and the defaults of the optional ones (made once: only ever read)."""
    fields = model.model_fields
    names = tuple(fields)
    keys = tuple(f.serialization_alias or f.alias or n for n, f in fields.items())
    defaults = tuple((n, f.get_default(call_default_factory=True)) for n, f in fields.items() if not f.is_required())
    return itemgetter(*names), keys, defaults


def plain(model: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as the JSON object of ``model(**fields)``: its fields in its order under
    their JSON keys, defaults filled in, other keys dropped -- for values that are already
    what the model's validation returns (plain ``str``/``int``/``bool``, aware datetimes,
    dicts of them), which the caller vouches for (``tests/api/test_fast_responses.py``)."""
    get, keys, defaults = _shape(model)
    for name, default in defaults:
        if name not in fields:
            fields[name] = default
    return dict(zip(keys, get(fields), strict=True))


def plain_response(model: Any, fields: dict[str, Any], status_code: int = 200) -> Response:
    """The response FastAPI's ``response_model=model`` would send for ``model(**fields)``,
    encoded by pydantic-core without building the model (nested items already :func:`plain`)."""
    return Response(content=to_json(plain(model, fields)), status_code=status_code, media_type="application/json")
