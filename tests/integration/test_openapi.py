"""The OpenAPI document: valid OpenAPI 3.1, true to the routes the api serves, shown at /docs
with assets served by medialog itself, and true to the api's answers — schemathesis runs every
operation against the live stack with valid tokens and finds no server error and no response
that breaks the schema."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

session_loop = pytest.mark.asyncio(loop_scope="session")
SEED = 20261207  # printed by schemathesis too: a failing run can be replayed with it


async def document(http: Any, stack: Any) -> dict[str, Any]:
    async with http.get(f"{stack.base_url}/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        doc: dict[str, Any] = await r.json()
        return doc


@session_loop
async def test_the_document_is_valid_openapi_3_1(http, stack):
    doc = await document(http, stack)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


@session_loop
async def test_the_document_names_every_route_the_api_serves(http, stack):
    doc = await document(http, stack)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    for method, path in [("POST", "/v1/uploads"), ("POST", "/v1/assets/{asset_id}/views"),
                         ("GET", "/v1/stream/{asset}/{expires}/{signature}/{path}"),
                         ("GET", "/health/ready"), ("GET", "/metrics")]:
        assert (method, path) in documented
    upload = doc["paths"]["/v1/uploads"]["post"]
    assert upload["security"] == [{"bearer": []}] and upload["x-roles"] == ["creator", "admin"]
    assert "UPLOAD_TOO_LARGE" in upload["responses"]["413"]["x-error-codes"]
    assert "RATE_LIMITED" in upload["responses"]["429"]["x-error-codes"]
    body = upload["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    props = doc["components"]["schemas"][body.rsplit("/", 1)[1]]["properties"]
    assert {"filename", "content_type", "size_bytes", "title", "description", "tags",
            "category", "visibility"} <= set(props)
    views = doc["paths"]["/v1/assets/{asset_id}/views"]["post"]
    assert views["security"] == [{}, {"bearer": []}]
    assert "INVALID_VIEW_REPORT" in views["responses"]["400"]["x-error-codes"]


@session_loop
async def test_the_docs_page_needs_nothing_from_elsewhere(http, stack):
    async with http.get(f"{stack.base_url}/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in page.replace("http-equiv", "")
    for asset in ("docs/static/swagger-ui-bundle.js", "docs/static/swagger-ui.css",
                  "docs/init.js"):
        assert asset in page
        async with http.get(f"{stack.base_url}/{asset}") as r:
            assert r.status == 200, asset
            assert len(await r.read()) > 10


async def uploaded_asset(http: Any, stack: Any, token: str, data: bytes | None) -> str:
    """An asset of the token's user: its upload requested and, given ``data``, completed."""
    headers = {"Authorization": f"Bearer {token}", "Prefer": "wait=20"}
    body = {"filename": "clip.mp4", "content_type": "video/mp4",
            "size_bytes": len(data) if data else 1000, "title": "schemathesis"}
    async with http.post(f"{stack.base_url}/v1/uploads", json=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        up = await r.json()
    if data is not None:
        async with http.put(up["upload_url"], data=data, headers=up["headers"]) as r:
            assert r.status == 200
        async with http.post(f"{stack.base_url}/v1/assets/{up['asset_id']}/complete",
                             headers=headers) as r:
            assert r.status == 202, await r.text()
    return str(up["asset_id"])


async def until_ready(http: Any, stack: Any, token: str, asset_id: str) -> None:
    for _ in range(300):
        async with http.get(f"{stack.base_url}/v1/assets/{asset_id}",
                            headers={"Authorization": f"Bearer {token}"}) as r:
            if (await r.json())["status"] == "ready":
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{asset_id} did not become ready")


@session_loop
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(http, stack, clip,
                                                                          tmp_path: Path):
    """Every operation, positive and negative cases, with a token of an admin and creator. The
    asset routes act on a real ready asset of that user (a throwaway one for DELETE), so they
    reach their logic instead of answering 404."""
    user = "schemathesis-user"
    token = stack.token(user, "creator", "admin")
    ready = await uploaded_asset(http, stack, token, clip.read_bytes())
    throwaway = await uploaded_asset(http, stack, token, None)
    await until_ready(http, stack, token, ready)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.asset_id" = "{ready}"\n"path.creator_id" = "{user}"\n\n'
        f'[[operations]]\ninclude-path = "/v1/assets/{{asset_id}}"\n'
        f'include-method = "DELETE"\nparameters = {{ "path.asset_id" = "{throwaway}" }}\n')
    command = [
        str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run",
        f"{stack.base_url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", "15", "--seed", str(SEED), "--workers", "2",
        "--request-timeout", "30", "--phases", "examples,coverage,fuzzing",
        "--report-dir", str(tmp_path), "--output-truncate", "false",
    ]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                  timeout=1200, check=False, cwd=tmp_path)  # its cache: there
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
