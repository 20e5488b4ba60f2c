"""The service's routes, one router per caller:

- :mod:`.api`: the REST API for apps (``/api/...``, with an API key or a session);
- :mod:`.web`: the browser sign-in flow (``/auth/...``);
- :mod:`.notifications`: Apple's server-to-server notifications;
- :mod:`.home`: the demo page and the health check.

The admin panel's pages are in :mod:`appleconnect.server.admin`, the buttons and the embedding
endpoints in :mod:`appleconnect.server.admin.buttons`.
"""
