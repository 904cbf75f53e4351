// The API documentation page: Swagger UI (vendored beside this file) on this server's
// OpenAPI document. A file of its own because the page's CSP allows no inline script.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/schema/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});
