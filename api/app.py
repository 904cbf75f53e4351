"""The Litestar application factory: the audience routers, lifespan, guard, error mapping."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api import metrics
from api.auth import PUBLIC, authorize
from api.docs_page import DocsPage
from api.problems import EXCEPTION_HANDLERS
from api.request_log import request_log
from api.routes import routers_for
from api.routes.access import DEFAULT_BODY_LIMIT, require_json, services_of
from api.runtime import logs
from api.runtime.clock import Clock, wall_clock
from api.runtime.services import Services
from api.runtime.settings import Settings, settings_from_env


def create_app(settings: Settings, *, clock: Clock = wall_clock) -> Litestar:
    """The service for `settings`; `clock` is injectable so tests control time."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.start(settings, clock)
        app.state.services = services
        metrics.record_build(services.policy.version)
        # Long-lived start-up objects (policy, keys, mirror, the app) out of the collector's
        # sight: full collections of them showed as 100+ ms latency spikes.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.close()

    app = Litestar(
        route_handlers=routers_for(settings.role),
        lifespan=[lifespan],
        guards=[authorize],
        before_request=require_json,
        dependencies={"services": Provide(services_of, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=DEFAULT_BODY_LIMIT,
        openapi_config=OpenAPIConfig(
            title="Checkpoint",
            version="1",
            description="Signed QR entry permits for Makkah: issuing portals, checkpoint "
            "scanners and revocation admins. Send 'Authorization: Bearer <API key>'.",
            path="/schema",
            # The document, and Swagger UI from this server's own files (api/static), under
            # the scanner page's CSP: nothing from a CDN on the origin that holds API keys.
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin(), DocsPage()],
            # Each operation's description is its handler's docstring.
            use_handler_docstrings=True,
            # The API's description is public; every data route still needs a key.
            # The documentation's own pages are not operations of the API.
            openapi_router=Router(
                path="/schema", route_handlers=[], opt=PUBLIC, include_in_schema=False
            ),
            security=[{"apiKey": []}],
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An API key from 'checkpoint credentials create'",
                    )
                }
            ),
        ),
        debug=False,
        # Logging is the process's (api/runtime/logs.py: text or JSON, for every logger),
        # not reconfigured by each app: Litestar's default replaced the root's handlers.
        logging_config=None,
    )
    app.asgi_handler = request_log(app.asgi_handler, access=settings.access_log)
    return app


def app_from_env() -> Litestar:
    """Entry point for `uvicorn --factory` worker processes: settings from CHECKPOINT_*."""
    settings = settings_from_env()
    logs.configure(settings.log_format)
    return create_app(settings)
