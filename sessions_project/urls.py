from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from sessions_app import event_views, views


class OptionalSlashRouter(SimpleRouter):
    """Every route answers with and without its trailing slash, and never redirects."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("sessions", views.SessionViewSet, basename="session")

urlpatterns = [
    path("", views.index, name="index"),
    re_path(r"^admin$", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^healthz/?$", views.health, name="health"),
    re_path(r"^events/?$", event_views.EventListView.as_view(), name="event-list"),
    re_path(r"^sessions/(?P<pk>[^/]+)/events/?$", event_views.SessionEventListView.as_view(), name="session-events"),
    *router.urls,
]

handler400 = "sessions_app.exceptions.bad_request"
handler404 = "sessions_app.exceptions.not_found"
handler500 = "sessions_app.exceptions.server_error"
