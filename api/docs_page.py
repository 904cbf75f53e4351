"""The API documentation page: Swagger UI from this server's own static files, no CDN."""

from __future__ import annotations

from importlib import resources
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin


class DocsPage(OpenAPIRenderPlugin):
    """`/schema/swagger` (and `/schema`): Swagger UI reading `/schema/openapi.json`.

    Litestar's own plugins load their scripts from public CDNs: blank on a closed network,
    and foreign code on the origin where the scanner page keeps its key. This page loads
    only `/static/` files, under a Content-Security-Policy of `'self'`.
    """

    def __init__(self) -> None:
        super().__init__(path=["/swagger", "/"])
        self._page = resources.files("api").joinpath("static", "docs.html").read_bytes()

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self._page
