"""Which calls change state: the client sends these to the primary straight away.

Any other call goes to any healthy node; a node that can only answer it on the primary replies `master`,
and the client follows that reply, so a write missing here costs one extra round trip, never a failure.
tests/test_client.py checks this set against the server's registry.
"""

from __future__ import annotations

WRITES = frozenset({
    "app/abort_job", "app/add_ticket_change", "app/create_alert", "app/create_api_key", "app/create_bucket",
    "app/create_category", "app/create_channel", "app/create_event", "app/create_group",
    "app/create_group_snapshot", "app/create_monitor", "app/create_plugin", "app/create_role", "app/create_secret",
    "app/create_snapshot", "app/create_tag", "app/create_ticket", "app/create_web_hook", "app/delete_alert",
    "app/delete_alert_invocation", "app/delete_api_key", "app/delete_bucket", "app/delete_bucket_file",
    "app/delete_category", "app/delete_channel", "app/delete_event", "app/delete_group", "app/delete_job",
    "app/delete_job_file", "app/delete_monitor", "app/delete_plugin", "app/delete_role", "app/delete_secret",
    "app/delete_server", "app/delete_snapshot", "app/delete_tag", "app/delete_ticket", "app/delete_ticket_file",
    "app/delete_web_hook",
    "app/empty_bucket", "app/flush_event_queue", "app/get_satellite_token", "app/job_skip_delay",
    "app/job_toggle_notify_me", "app/logout_all", "app/magic", "app/manage_alert_invocation_tickets",
    "app/manage_job_tags", "app/manage_job_tickets", "app/multi_update_category", "app/multi_update_group",
    "app/multi_update_monitor", "app/resume_job", "app/run_event", "app/test_alert", "app/test_monitor",
    "app/test_web_hook", "app/update_alert", "app/update_api_key", "app/update_bucket", "app/update_category",
    "app/update_channel", "app/update_event", "app/update_global_state", "app/update_group", "app/update_job",
    "app/update_monitor", "app/update_plugin", "app/update_role", "app/update_secret", "app/update_server",
    "app/update_server_data", "app/update_tag", "app/update_ticket", "app/update_ticket_change",
    "app/update_web_hook", "app/upload_bucket_files", "app/upload_files", "app/upload_job_input_files",
    "app/upload_user_ticket_files", "app/user_settings", "app/watch_group", "app/watch_server",
    "app/write_bucket_data", "user/admin_create",
    "user/admin_delete", "user/admin_update", "user/create", "user/login", "user/logout", "user/update",
})  # fmt: skip


def is_write(ns: str, name: str) -> bool:
    return f"{ns}/{name}" in WRITES
