"""The API documents itself completely and offline: every field has a description, every
error response an example, every POST its Idempotency-Key; /docs and /redoc load nothing
from another host."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from billing_engine.db import make_engine
from billing_engine.gateway.fake import FakeGateway
from billing_engine.settings import load_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'db.sqlite'}"
    from billing_engine.db import ensure_schema

    engine = make_engine(url)
    ensure_schema(engine)
    app = create_app(settings=load_settings(env="test", database_url=url), engine=engine, gateway=FakeGateway())
    return TestClient(app)


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def _walk(schema: dict[str, Any], where: str, spec: dict[str, Any], seen: set[str]) -> list[str]:
    """Every property reachable from ``schema`` without a description."""
    missing: list[str] = []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            missing += _walk(spec["components"]["schemas"][name], name, spec, seen)
        return missing
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            missing += _walk(sub, where, spec, seen)
    for name, prop in schema.get("properties", {}).items():
        if not (prop.get("description") or "").strip():
            missing.append(f"{where}.{name}")
        missing += _walk(prop, f"{where}.{name}", spec, seen)
    if isinstance(schema.get("items"), dict):
        missing += _walk(schema["items"], where + "[]", spec, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        missing += _walk(schema["additionalProperties"], where + "{}", spec, seen)
    return missing


def test_every_field_of_every_schema_has_a_description(spec: dict[str, Any]) -> None:
    missing: list[str] = []
    for name, schema in spec["components"]["schemas"].items():
        missing += _walk(schema, name, spec, {name})
    assert not missing, f"{len(missing)} field(s) without a description: {sorted(set(missing))}"


def test_every_field_has_an_example(spec: dict[str, Any]) -> None:
    bare = [f"{name}.{field}" for name, schema in spec["components"]["schemas"].items()
            for field, prop in schema.get("properties", {}).items()
            if "$ref" not in prop and not ({"example", "examples", "default", "const"} & set(prop))
            and "examples" not in schema and "example" not in schema]
    assert not bare, f"fields without an example (in the field or its model): {bare}"


def test_every_parameter_has_a_description(spec: dict[str, Any]) -> None:
    bare = [f"{m.upper()} {path} {p['name']}" for path, ops in spec["paths"].items() for m, op in ops.items()
            for p in op.get("parameters", []) if not (p.get("description") or "").strip()]
    assert not bare


def test_every_error_response_has_a_description_and_an_example(spec: dict[str, Any]) -> None:
    bad = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if not code.startswith(("4", "5")):
                    continue
                media = response.get("content", {})
                if not response.get("description") or not media or not all(
                        "example" in m or "examples" in m for m in media.values()):
                    bad.append(f"{method.upper()} {path} {code}")
    assert not bad, bad


def test_every_post_documents_idempotency_key(spec: dict[str, Any]) -> None:
    undocumented = []
    for path, ops in spec["paths"].items():
        op = ops.get("post")
        if op is None:
            continue
        header = [p for p in op.get("parameters", []) if p["name"].lower() == "idempotency-key" and p["in"] == "header"]
        if not (header and header[0].get("description")) and "Idempotency-Key" not in op.get("description", ""):
            undocumented.append(path)
    assert not undocumented


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_this_server(client: TestClient, page: str) -> None:
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""", html)
    assets = [u for pair in urls for u in pair if u]
    assert assets, html
    external = [u for u in assets if re.match(r"(?i)^(https?:)?//", u)]
    assert not external, f"{page} loads from another host: {external}"
    for asset in assets:
        if asset.startswith("/docs/static/"):
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 1000, asset
    assert client.get("/docs/static/../../etc/passwd").status_code == 404
