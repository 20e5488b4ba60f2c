"""``path("auth/apple/", include("appleconnect.integrations.django.urls"))``: ``start``,
``callback`` (register ``https://<host>/auth/apple/callback`` at Apple), ``finish`` and
``notifications``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "appleconnect_apple"

urlpatterns = [
    path("start", views.start, name="start"),
    path("callback", views.callback, name="callback"),
    path("finish", views.finish, name="finish"),
    path("notifications", views.notifications, name="notifications"),
]
