"""The shape of GET /sessions/metrics/ (output only, and the schema)."""

from __future__ import annotations

from rest_framework import serializers


class StatusCountsSerializer(serializers.Serializer):
    active = serializers.IntegerField()
    paused = serializers.IntegerField()
    completed = serializers.IntegerField()
    crashed = serializers.IntegerField()


class BackendCountsSerializer(serializers.Serializer):
    local = serializers.IntegerField()
    kubernetes = serializers.IntegerField()
    unknown = serializers.IntegerField()


class DurationStatsSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Ended sessions (completed or crashed) measured.")
    mean = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True, help_text="Median (percentile_cont 0.5).")
    p95 = serializers.FloatField(allow_null=True, help_text="95th percentile (percentile_cont 0.95).")
    max = serializers.FloatField(allow_null=True)


class CrashRateSerializer(serializers.Serializer):
    crashed = serializers.IntegerField(help_text="Sessions whose status is crashed now.")
    of_all = serializers.FloatField(allow_null=True, help_text="crashed / all sessions; null when there are none.")
    of_ended = serializers.FloatField(
        allow_null=True, help_text="crashed / ended (completed or crashed) sessions; null when none ended."
    )


class RecoveryStatsSerializer(serializers.Serializer):
    recovered_sessions = serializers.IntegerField(help_text="Sessions recovered at least once.")
    total_attempts = serializers.IntegerField(help_text="Recovery attempts over all sessions.")
    exhausted = serializers.IntegerField(help_text="Sessions that have used up their attempts (recoverable: false).")
    awaiting_recovery = serializers.IntegerField(help_text="Crashed sessions that can still be recovered.")
    max_attempts = serializers.IntegerField(help_text="MAX_RECOVERY_ATTEMPTS.")


class DayCountSerializer(serializers.Serializer):
    date = serializers.DateField()
    count = serializers.IntegerField()


class SessionMetricsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = StatusCountsSerializer()
    by_session_type = serializers.DictField(child=serializers.IntegerField(), help_text="Session type -> count.")
    by_runtime_backend = BackendCountsSerializer()
    duration_seconds = DurationStatsSerializer(help_text="Durations (ended_at - created_at) of ended sessions.")
    crash_rate = CrashRateSerializer()
    recovery = RecoveryStatsSerializer()
    created_per_day = DayCountSerializer(
        many=True, help_text="Sessions created per day (UTC), from the first to the last day with any; empty days 0."
    )
