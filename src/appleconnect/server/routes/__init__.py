"""The service's routes, one router per caller:

- :mod:`.api`: the REST API for apps (``/api/...``, with an API key or a session);
- :mod:`.web`: the browser sign-in flow (``/auth/...``);
- :mod:`.notifications`: Apple's server-to-server notifications;
- :mod:`.home`: the demo page and the health check;
- :mod:`.buttons`: the button images, ``embed.js`` and the embedding popup, for other sites;
- :mod:`.apidocs`: the interactive API documentation (``/docs``, Swagger UI, offline).

The admin panel's pages are in :mod:`appleconnect.server.admin`.
"""
