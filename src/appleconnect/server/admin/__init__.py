"""The admin panel (``/admin``), the service's buttons and the embedding endpoints.

- :mod:`.panel` gathers the panel's pages (:mod:`.session`, :mod:`.overview`, :mod:`.apple`,
  :mod:`.verify`, :mod:`.new_users`, :mod:`.users`, :mod:`.apikeys`, :mod:`.logs`,
  :mod:`.embed`), which share :mod:`.pages`; :mod:`.auth` is the admin session and CSRF;
- :mod:`.buttons` serves the public buttons and ``embed.js``;
- :mod:`.runtime` applies the settings changed in the panel in every process.

``docs/admin.md`` and ``docs/embedding.md`` describe what the pages do.
"""
