"""The admin panel (``/admin``).

- :mod:`.panel` gathers the panel's pages (:mod:`.session`, :mod:`.overview`, :mod:`.apple`,
  :mod:`.verify`, :mod:`.new_users`, :mod:`.users`, :mod:`.apikeys`, :mod:`.logs`,
  :mod:`.embed`), which share :mod:`.pages`; :mod:`.auth` is the admin session and CSRF.

What the panel changes takes effect through :mod:`appleconnect.server.live_settings`.

``docs/admin.md`` and ``docs/embedding.md`` describe what the pages do.
"""
