// docs.js - starts Swagger UI on the server's own description of its API (openapi.json,
// beside this page). Every asset comes from this server: no validator badge (it would ask
// a public service), no remote configuration, no deep links out.
'use strict';
window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: 'openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
    tryItOutEnabled: false,
    displayRequestDuration: true,
    queryConfigEnabled: false,
  });
});
