"""Which calls change state and which only read: the client sends writes to the primary straight away, and
repeats a cut-off call on another node only when it is a known read (a server newer than the client may have
writes this list lacks: those go to any node, which answers `master`, and are never repeated unasked).
tests/test_client.py checks both sets against the server's registry.
"""

from __future__ import annotations

WRITES = frozenset({
    "app/abort_job", "app/add_ticket_change", "app/admin_delete_data", "app/admin_import_data", "app/admin_logout_all",
    "app/admin_reset_daily_stats", "app/admin_run_maintenance", "app/admin_send_test_email", "app/admin_update_config",
    "app/bulk_search_delete_jobs", "app/create_alert", "app/create_api_key", "app/create_bucket",
    "app/create_category", "app/create_channel", "app/create_event", "app/create_group",
    "app/create_group_snapshot", "app/create_monitor", "app/create_plugin", "app/create_role", "app/create_secret",
    "app/create_snapshot", "app/create_tag", "app/create_ticket", "app/create_web_hook", "app/delete_alert",
    "app/delete_alert_invocation", "app/delete_api_key", "app/delete_bucket", "app/delete_bucket_file",
    "app/delete_category", "app/delete_channel", "app/delete_event", "app/delete_group", "app/delete_job",
    "app/delete_job_file", "app/delete_monitor", "app/delete_plugin", "app/delete_role", "app/delete_secret",
    "app/delete_server", "app/delete_snapshot", "app/delete_tag", "app/delete_ticket", "app/delete_ticket_file",
    "app/delete_web_hook",
    "app/empty_bucket", "app/flush_event_queue", "app/get_satellite_token", "app/get_transfer_token",
    "app/job_skip_delay",
    "app/job_toggle_notify_me", "app/logout_all", "app/magic", "app/manage_alert_invocation_tickets",
    "app/manage_job_tags", "app/manage_job_tickets", "app/multi_update_category", "app/multi_update_group",
    "app/multi_update_monitor", "app/resume_job", "app/run_event", "app/test_alert", "app/test_internal_job",
    "app/test_monitor", "app/test_web_hook", "app/update_alert", "app/update_api_key", "app/update_bucket",
    "app/update_category",
    "app/update_channel", "app/update_event", "app/update_global_state", "app/update_group", "app/update_job",
    "app/update_monitor", "app/update_plugin", "app/update_role", "app/update_secret", "app/update_server",
    "app/update_server_data", "app/update_tag", "app/update_ticket", "app/update_ticket_change",
    "app/update_web_hook", "app/upload_bucket_files", "app/upload_files", "app/upload_job_input_files",
    "app/upload_user_ticket_files", "app/user_settings", "app/watch_group", "app/watch_server",
    "app/write_bucket_data", "user/admin_create",
    "user/admin_delete", "user/admin_update", "user/create", "user/login", "user/logout", "user/update",
})  # fmt: skip


READS = frozenset({
    "app/admin_export_data", "app/admin_get_config", "app/admin_stats", "app/bulk_search_export", "app/dash_stats",
    "app/decrypt_secret", "app/download_job_log", "app/echo", "app/error", "app/get_active_job_summary",
    "app/get_active_jobs", "app/get_active_server", "app/get_active_servers", "app/get_alert",
    "app/get_alert_invocations", "app/get_alerts", "app/get_api_key", "app/get_api_keys", "app/get_bucket",
    "app/get_buckets", "app/get_categories", "app/get_category", "app/get_channel", "app/get_channels",
    "app/get_event", "app/get_event_history", "app/get_events", "app/get_global_state", "app/get_group",
    "app/get_groups", "app/get_historical_monitor_data", "app/get_internal_jobs", "app/get_job", "app/get_job_log",
    "app/get_jobs",
    "app/get_latest_monitor_data", "app/get_monitor", "app/get_monitors", "app/get_multiple", "app/get_plugin",
    "app/get_plugins", "app/get_quickmon_data", "app/get_role", "app/get_roles", "app/get_secret",
    "app/get_secrets", "app/get_server", "app/get_server_summaries", "app/get_servers", "app/get_tag",
    "app/get_tags", "app/get_ticket", "app/get_tickets", "app/get_user_activity", "app/get_web_hook",
    "app/get_web_hooks", "app/ping", "app/search_activity", "app/search_alerts", "app/search_jobs",
    "app/search_revision_history", "app/search_servers", "app/search_snapshots", "app/search_tickets",
    "app/stream_job", "app/tail_live_job_log", "app/view_job_log", "user/admin_get_user", "user/admin_get_users",
    "user/resume_session"
})  # fmt: skip


def is_write(ns: str, name: str) -> bool:
    return f"{ns}/{name}" in WRITES


def is_read(ns: str, name: str) -> bool:
    return f"{ns}/{name}" in READS
