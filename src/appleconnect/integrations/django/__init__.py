"""Sign in with Apple for Django projects (``pip install 'appleconnect[django]'``).

Add ``"appleconnect.integrations.django"`` to ``INSTALLED_APPS``,
``"appleconnect.integrations.django.backends.AppleBackend"`` to ``AUTHENTICATION_BACKENDS``,
``path("auth/apple/", include("appleconnect.integrations.django.urls"))`` to your URLs and an
``APPLE_SIGN_IN`` setting (docs/integrations.md). Everything is kept in Django's database:
the sign-ins in progress, the ``sub`` → user mapping (:class:`~.models.AppleIdentity`) and the
notifications already applied. Sessions are Django's own (``login()``).
"""
