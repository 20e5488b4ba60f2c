// Starts Swagger UI on the /docs page (appleconnect.server.routes.apidocs). A file rather than an
// inline script, so that the page's Content-Security-Policy allows scripts from this origin only.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    // Relative to the page, so that the page works under a proxy's path prefix.
    url: new URL(root.dataset.openapi, document.baseURI).href,
    domNode: root,
    deepLinking: true,
    // Never send the document to a validator elsewhere, and never keep an API key the reader
    // types into "Authorize" beyond the page (Swagger UI's default; said here on purpose).
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
