"""Answer with a model serialised once, the way FastAPI's ``response_model`` would.

A sync endpoint that returns a model makes FastAPI validate it again against
``response_model`` and serialise it -- in the thread pool, a second hop per request.
For the hot read endpoints (the subscription list and show) the endpoint builds the
response model itself and returns :func:`json_response`: the same bytes
(``TypeAdapter(model).dump_json(value, by_alias=True)``, what FastAPI sends) and the same
``content-type``, without the second validation or hop. The decorator keeps
``response_model``, so the OpenAPI document is unchanged (FastAPI does not validate a
``Response`` an endpoint returns). ``tests/api/test_fast_responses.py`` compares the two.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import Response
from pydantic import TypeAdapter


@cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def dump(model: Any, value: Any) -> bytes:
    """``value`` (an instance of ``model``) as FastAPI's ``response_model=model`` sends it."""
    return _adapter(model).dump_json(value, by_alias=True)


def json_response(model: Any, value: Any, status_code: int = 200) -> Response:
    return Response(content=dump(model, value), status_code=status_code, media_type="application/json")
