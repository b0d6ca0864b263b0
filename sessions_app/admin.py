from django.contrib import admin

from .models import Session


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["id", "agent_id", "session_type", "status", "runtime_backend", "created_at", "updated_at"]
    list_filter = ["status", "runtime_backend"]
    show_full_result_count = False
