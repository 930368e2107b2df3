"""Email actions against a real SMTP server (aiosmtpd) on 127.0.0.1, the templates, and the SMTP settings.

STARTTLS is only tested as refused (a self-signed certificate fails verification, a server without STARTTLS is
refused); a successful upgrade would need a certificate the client trusts, which SmtpConfig does not take.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from api.cli import build_parser, settings_from
from api.server import smtp_config
from api.settings import ConfigError
from cluster.actions.email import SmtpConfig, email_template, job_email_data, load_template, send_email, template_names
from cluster.expressions.templates import check
from tests.servers import free_port

USER, PASSWORD = "mailer", "s3cret-Pa55"
JOB = {"id": "jmail1", "event": "enightly", "category": "general", "plugin": "shellplug", "code": "warn",
       "description": "disk <script>alert(1)</script> full", "completed": 1_700_000_000.0, "elapsed": 125,
       "pid": 4242, "log_file_size": 2048, "notes": "call the on-call person"}  # fmt: skip
EVENT = {"id": "enightly", "title": "Nightly backup"}


@dataclass
class Sink:
    """What the SMTP server received."""

    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 Message accepted"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:  # fmt: skip
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(), PASSWORD.encode())
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


def _start(sink: Sink, **options: Any) -> Iterator[tuple[Sink, int]]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    yield from _start(Sink())


@pytest.fixture
def smtp_auth() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    yield from _start(sink, authenticator=sink.authenticate, auth_required=True, auth_require_tls=False)


def _config(port: int, **changes: Any) -> SmtpConfig:
    base = SmtpConfig(host="127.0.0.1", port=port, tls="none", timeout_s=10, from_address="podium@example.com",
                      base_url="http://podium.example:5522")  # fmt: skip
    return replace(base, **changes)


def _data(**changes: Any) -> dict[str, Any]:
    action = {"condition": "error", "type": "email"}
    return job_email_data({**JOB, **changes}, EVENT, base_url="http://podium.example:5522", secret_key="k",
                          action=action, output="line one\n```\nlast line\n")  # fmt: skip


def _texts(msg: EmailMessage) -> tuple[str, str]:
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    return str(plain.get_content()), str(html.get_content())


async def test_a_job_email_arrives_with_its_placeholders_filled(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    to = ["ops@example.com, dev@example.com", "OPS@example.com", "not an address"]
    outcome = await send_email(_config(port), to=to, template="job_fail", data=_data())
    assert outcome.code == 0, outcome
    assert outcome.description == "Email sent to ops@example.com, dev@example.com"
    assert len(sink.messages) == 1
    envelope, msg = sink.messages[0]
    assert envelope.mail_from == "podium@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]  # the duplicate went, the junk too
    assert msg["To"] == "ops@example.com, dev@example.com" and msg["From"] == "podium@example.com"
    assert msg["Subject"] == "Podium: job FAILED for Nightly backup (code warn)"
    assert msg.get_content_type() == "multipart/alternative" and msg["Message-ID"]
    plain, html = _texts(msg)
    assert "`jmail1`" in plain and "http://podium.example:5522/#Job?id=jmail1" in plain
    assert "/api/app/download_job_log?id=jmail1&t=" in plain and "(2 KB)" in plain
    assert "2 minutes 5 seconds" in plain and "pid 4242" in plain and "call the on-call person" in plain
    assert "last line" in plain and "\n```\nlast line" not in plain  # the log cannot close the fence
    assert "{{" not in plain and "Category:** general" in plain
    # The html part is the same text rendered, with what the job wrote escaped, never markup.
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http://podium.example:5522/#Job?id=jmail1" in html and "<li><strong>Category:</strong> general" in html
    assert "not an address" in outcome.details and "ops@example.com, dev@example.com" in outcome.details


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_login_and_no_password_anywhere(smtp_auth: tuple[Sink, int]) -> None:
    sink, port = smtp_auth
    good = await send_email(_config(port, username=USER, password=PASSWORD), to=["a@example.com"],
                            template="job_success", data=_data(code=0))  # fmt: skip
    assert good.code == 0 and sink.logins == [USER] and len(sink.messages) == 1
    assert sink.messages[0][1]["Subject"] == "Podium: job succeeded for Nightly backup"
    wrong = await send_email(_config(port, username=USER, password="wrong-" + PASSWORD), to=["a@example.com"],
                             template="job_success", data=_data(code=0))  # fmt: skip
    assert wrong.code == "email" and wrong.description.startswith("Failed to send email to a@example.com")
    assert len(sink.messages) == 1
    for outcome in (good, wrong):
        assert PASSWORD not in str(outcome.record())
    config = _config(port, password=PASSWORD)
    assert PASSWORD not in repr(config)


async def test_an_unreachable_server_is_an_outcome() -> None:
    port = free_port()  # nothing listens there
    outcome = await send_email(_config(port, password=PASSWORD), to=["a@example.com"], template="job_start",
                               data=_data())  # fmt: skip
    assert outcome.code == "email" and outcome.description.startswith("Failed to send email to a@example.com: ")
    assert PASSWORD not in str(outcome.record()) and f"127.0.0.1:{port}" in outcome.details


async def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts the connection, never greets
        port = listener.getsockname()[1]
        outcome = await send_email(_config(port, timeout_s=0.5), to=["a@example.com"], template="job_start",
                                   data=_data())  # fmt: skip
    assert outcome.code == "email" and "within 0.5 s" in outcome.description


async def test_not_configured_no_recipients_unknown_template(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    off = await send_email(SmtpConfig(), to=["a@example.com"], template="job_start", data=_data())
    assert (off.code, off.description) == ("email", "SMTP is not configured (set --smtp-host)")
    nobody = await send_email(_config(port), to=["", "  ", "junk"], template="job_start", data=_data())
    assert nobody.code == 0 and nobody.description.startswith("No recipients for email (skipping)")
    unknown = await send_email(_config(port), to=["a@example.com"], template="../../etc/passwd", data=_data())
    assert unknown.code == "email" and unknown.description.startswith("Unknown email template")
    bad_body = await send_email(_config(port), to=["a@example.com"], template="job_start", data=_data(),
                                body="Hello {{ job.id")  # fmt: skip
    assert bad_body.code == "email" and "bad template" in bad_body.description
    assert sink.messages == []


async def test_a_custom_body_keeps_the_template_subject(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    outcome = await send_email(_config(port), to=["a@example.com"], template="job_start", data=_data(),
                               body="Custom: {{ job.id }} at {{ links.job_details }}")  # fmt: skip
    assert outcome.code == 0
    msg = sink.messages[0][1]
    assert msg["Subject"] == "Podium: job started for Nightly backup"
    assert _texts(msg)[0].strip() == "Custom: jmail1 at http://podium.example:5522/#Job?id=jmail1"


async def test_no_header_injection_and_bounded_recipients(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    data = job_email_data(JOB, {"id": "e", "title": "Evil\r\nBcc: victim@example.org\r\n\r\nbody"},
                          base_url="http://x", action={"condition": "start"})  # fmt: skip
    many = [f"user{n}@example.com" for n in range(5)]
    outcome = await send_email(_config(port, max_recipients=2), to=many, template="job_start", data=data)
    assert outcome.code == 0
    envelope, msg = sink.messages[0]
    assert envelope.rcpt_tos == many[:2]
    assert msg["Subject"] == "Podium: job started for Evil Bcc: victim@example.org body"
    assert msg["Bcc"] is None and "victim@example.org" not in envelope.rcpt_tos
    assert "Over the limit of 2 recipients (skipped):** 3" in outcome.details


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


@pytest.fixture
def smtp_tls(tmp_path: Path) -> Iterator[tuple[Sink, int]]:
    yield from _start(Sink(), tls_context=_self_signed(tmp_path))


async def test_starttls_is_required_and_verified(smtp: tuple[Sink, int], smtp_tls: tuple[Sink, int]) -> None:
    plain_sink, plain_port = smtp
    refused = await send_email(_config(plain_port, tls="starttls"), to=["a@example.com"], template="job_start",
                               data=_data())  # fmt: skip
    assert refused.code == "email" and "STARTTLS" in refused.description.upper()
    tls_sink, tls_port = smtp_tls
    unverified = await send_email(_config(tls_port, tls="starttls"), to=["a@example.com"], template="job_start",
                                  data=_data())  # fmt: skip
    assert unverified.code == "email" and "CERTIFICATE" in unverified.description.upper()
    assert plain_sink.messages == [] and tls_sink.messages == []


# -- templates ---------------------------------------------------------------------------------------------


def test_every_template_has_a_subject_and_compiles() -> None:
    assert {"job_start", "job_success", "job_fail", "job_limited", "job_suspended", "job_progress", "alert_new",
            "alert_cleared"} <= template_names()  # fmt: skip
    for name in template_names():
        subject, body = load_template(name)
        assert subject and body.strip(), name
        check(subject)
        check(body)
    with pytest.raises(KeyError):
        load_template("nope")


@pytest.mark.parametrize(("condition", "job", "expected"), [
    ("start", {}, "job_start"), ("success", {"completed": 1, "code": 0}, "job_success"),
    ("error", {"completed": 1, "code": 1}, "job_fail"), ("complete", {"completed": 1, "code": "warn"}, "job_fail"),
    ("instant", {}, "job_progress"),
])  # fmt: skip
def test_the_template_chosen(condition: str, job: dict[str, Any], expected: str) -> None:
    assert email_template(job, condition) == expected
    assert email_template(job, condition, "job_limited") == "job_limited"


def test_limited_and_suspended_read_the_action() -> None:
    action = {"condition": "start", "template": "job_limited", "title": "Max CPU", "source": "event",
              "msg": "CPU over 90% for 60 s", "summary": "- Tagged `slow`\n- Aborted the job"}  # fmt: skip
    from cluster.expressions.templates import render

    data = job_email_data({**JOB, "completed": None}, EVENT, base_url="http://x", action=action)
    subject, body = load_template("job_limited")
    assert render(subject, data, missing="n/a") == "Podium: Max CPU limit reached by a job of Nightly backup"
    text = render(body, data, missing="n/a")
    assert "CPU over 90% for 60 s" in text and "Aborted the job" in text and "(set on the event)" in text
    assert data["text"] == "Podium: CPU over 90% for 60 s. Details: http://x/#Job?id=jmail1"
    subject, body = load_template("job_suspended")
    assert "http://x/#Job?id=jmail1&resume=1" in render(body, data, missing="n/a")


# -- settings ----------------------------------------------------------------------------------------------


def _settings(*argv: str, **env: str) -> Any:
    return settings_from(build_parser().parse_args(["serve", *argv]), env)


def test_smtp_settings() -> None:
    off = smtp_config(_settings())
    assert (off.enabled, off.port, off.tls, off.from_address) == (False, 25, "none", "podium@localhost")
    assert off.base_url == "http://127.0.0.1:5522"
    on = _settings("--smtp-host", "mail.example.com", "--smtp-port", "587", "--smtp-username", "u",
                   "--base-url", "https://podium.example.com/", PODIUM_SMTP_PASSWORD="hunter2-pw")  # fmt: skip
    config = smtp_config(on)
    assert (config.host, config.port, config.tls, config.username, config.password) == (
        "mail.example.com", 587, "starttls", "u", "hunter2-pw")
    assert config.base_url == "https://podium.example.com"
    assert "hunter2-pw" not in repr(on) and "hunter2-pw" not in repr(config)
    assert smtp_config(_settings("--smtp-port", "465")).tls == "tls"
    assert smtp_config(_settings("--smtp-port", "587", "--smtp-tls", "none")).tls == "none"
    assert smtp_config(_settings(PODIUM_EMAIL_FROM="ops@example.com")).from_address == "ops@example.com"


@pytest.mark.parametrize(("argv", "env", "fragment"), [
    (["--smtp-port", "0"], {}, "--smtp-port 0"),
    ([], {"PODIUM_SMTP_PORT": "x"}, "PODIUM_SMTP_PORT='x'"),
    (["--email-from", "a@b\r\nBcc: c@d"], {}, "--email-from"),
    ([], {"PODIUM_SMTP_TLS": "ssl"}, "PODIUM_SMTP_TLS='ssl'"),
    (["--base-url", "ftp://x"], {}, "--base-url"),
    (["--smtp-host", "mail host"], {}, "--smtp-host"),
])  # fmt: skip
def test_bad_smtp_settings(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        _settings(*argv, **env)


async def test_several_emails_at_once(smtp: tuple[Sink, int]) -> None:
    sink, port = smtp
    outcomes = await asyncio.gather(*(send_email(_config(port), to=[f"u{n}@example.com"], template="job_start",
                                                 data=_data()) for n in range(5)))  # fmt: skip
    assert [o.code for o in outcomes] == [0] * 5
    assert sorted(env.rcpt_tos[0] for env, _ in sink.messages) == [f"u{n}@example.com" for n in range(5)]


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    yield
    # every executor finishes its own work: nothing of it may still run once a test is over
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
