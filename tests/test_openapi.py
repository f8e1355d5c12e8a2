"""The self-description of the API: /openapi.json, /docs, and /healthz, over real HTTP."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cloudpbx import __version__
from cloudpbx.api.routes.params import (
    DATE_PATTERN,
    DIALABLE_PATTERN,
    EXTENSION_PATTERN,
    UNIQUEID_PATTERN,
)
from tests.live import LiveServer
from tests.test_api_rest import CDR_FIELDS, http, module_server

PATHS = {
    "/cdr": "get",
    "/transcription": "get",
    "/transcription/{uniqueid}": "get",
    "/record": "get",
    "/record/{uniqueid}": "get",
    "/dial": "get",
    "/sendSMS": "post",
    "/healthz": "get",
}
STATUS_KEY = re.compile(r"[1-5](?:[0-9]{2}|XX)|default")


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory.mktemp("openapi")) as live:
        yield live


@pytest.fixture(scope="module")
async def spec(server: LiveServer) -> dict[str, Any]:
    async with http(server) as client:  # no key: the description is public
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_is_an_openapi_3_document(spec: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.[01]\.[0-9]+", spec["openapi"])
    assert spec["info"]["title"] == "CloudPBX API"
    assert spec["info"]["version"] == __version__
    assert "Bearer" in spec["info"]["description"]
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations(spec):
        assert path.startswith("/")
        assert method in {"get", "post", "put", "delete", "patch", "head", "options"}
        assert operation["responses"], (path, method)
        for status, response in operation["responses"].items():
            assert STATUS_KEY.fullmatch(status), (path, status)
            assert response["description"], (path, status)
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), path
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in {"query", "path", "header", "cookie"}
            assert parameter["in"] != "path" or parameter["required"] is True
    schemas = spec.get("components", {}).get("schemas", {})
    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_lists_every_path_of_the_contract(spec: dict[str, Any]) -> None:
    for path, method in PATHS.items():
        assert path in spec["paths"], path
        assert method in spec["paths"][path], (path, method)
    # No converter syntax leaks into the documented templates.
    assert not [path for path in spec["paths"] if ":" in path]


def test_declares_the_bearer_key_on_every_api_endpoint(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "ApiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "The PBX's API key: `Bearer KEY`",
        }
    }
    for path, method in PATHS.items():
        operation = spec["paths"][path][method]
        if path == "/healthz":
            assert "security" not in operation
        else:
            assert operation["security"] == [{"ApiKey": []}], path


def test_documents_the_errors_that_are_really_sent(spec: dict[str, Any]) -> None:
    """JSON {error, code} for client mistakes; no FastAPI 422 body, which is never sent."""
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "code"}
    assert set(error["required"]) == {"error", "code"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, method, operation in operations(spec):
        assert "422" not in operation["responses"], (path, method)
        if path != "/healthz":
            assert operation["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    sms = spec["paths"]["/sendSMS"]["post"]["responses"]
    assert sms["400"]["content"]["text/plain"]["example"] == "Parameter is missing"
    dial = spec["paths"]["/dial"]["get"]["responses"]
    assert dial["500"]["content"]["text/plain"]["example"] == "Action Error"
    assert dial["200"]["content"]["text/plain"]["example"] == "OK"
    assert set(dial["200"]["content"]) == set(dial["500"]["content"]) == {"text/plain"}
    download = spec["paths"]["/record/{uniqueid}"]["get"]["responses"]
    assert "application/json" not in download["200"]["content"]


def test_describes_the_rows(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    cdr = schemas["CdrRow"]["properties"]
    assert list(cdr) == CDR_FIELDS
    assert {name for name, field in cdr.items() if field["type"] == "integer"} == {
        "duration",
        "billsec",
    }
    assert list(schemas["RecordingRow"]["properties"]) == [
        "uniqueid",
        "src",
        "dst",
        "format",
        "date",
    ]
    assert list(schemas["TranscriptionRow"]["properties"]) == ["uniqueid", "calldate", "src", "dst"]
    assert list(schemas["Transcription"]["properties"]) == ["uniqueid", "content", "summary"]
    listed = spec["paths"]["/cdr"]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/CdrRow"
    }
    assert set(listed["headers"]) == {"X-Total-Count", "X-Truncated"}
    for path in ("/cdr", "/record", "/transcription"):
        parameters = spec["paths"][path]["get"]["parameters"]
        assert [(p["name"], p["in"], p.get("required", False)) for p in parameters] == [
            ("datestart", "query", False),
            ("datestop", "query", False),
        ]
    download = spec["paths"]["/record/{uniqueid}"]["get"]["responses"]
    assert "audio/wav" in download["200"]["content"]
    assert {"206", "416"} <= set(download)


def test_describes_send_sms(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/sendSMS"]["post"]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    body = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"to", "body", "test"}
    answer = spec["components"]["schemas"]["SmsResponse"]["properties"]
    assert list(answer) == ["responseId", "responseStatus", "responseErrorMessage"]
    dial = spec["paths"]["/dial"]["get"]
    assert [p["name"] for p in dial["parameters"]] == ["cpa", "cpb"]


def test_parameters_declare_their_rules(spec: dict[str, Any]) -> None:
    """Patterns on every parameter with a rule (tests/test_api_patterns.py checks that the
    server agrees with them); /dial's numbers are required, as the server treats them."""

    def schema(path: str, name: str) -> dict[str, Any]:
        (parameter,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
        found: dict[str, Any] = parameter["schema"]
        assert found["type"] == "string"
        return found

    for path in ("/cdr", "/record", "/transcription"):
        for name in ("datestart", "datestop"):
            assert schema(path, name)["pattern"] == DATE_PATTERN
            assert schema(path, name)["format"] == "date"
    for path in ("/record/{uniqueid}", "/transcription/{uniqueid}"):
        assert schema(path, "uniqueid")["pattern"] == UNIQUEID_PATTERN
        assert schema(path, "uniqueid")["maxLength"] == 64
    assert schema("/dial", "cpa")["pattern"] == EXTENSION_PATTERN
    assert schema("/dial", "cpb")["pattern"] == DIALABLE_PATTERN
    assert all(p["required"] for p in spec["paths"]["/dial"]["get"]["parameters"])


async def test_docs_page_is_html(server: LiveServer) -> None:
    async with http(server) as client:
        response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<html" in response.text.lower()
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-key"])
async def test_healthz(server: LiveServer, authorization: str | None) -> None:
    """Public, whatever the Authorization header says: load balancers have no key."""
    headers = {"Authorization": authorization} if authorization else {}
    async with http(server) as client:
        response = await client.get("/healthz", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "database": "ok",
        "pid": os.getpid(),  # the server runs in the test's process
        "backends": [],
        "sms": [{"gateway": "simulator", "status": "ok"}],
        "dependencies": [
            {"name": "database", "status": "ok"},
            {"name": "sms", "gateway": "simulator", "status": "ok"},
            {
                "name": "transcription",
                "engines": ["pocketsphinx"],
                "status": "ok",
                "mode": "external",
            },
        ],
    }


async def test_redoc_is_not_served(server: LiveServer) -> None:
    async with http(server) as client:
        response: httpx.Response = await client.get("/redoc")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
