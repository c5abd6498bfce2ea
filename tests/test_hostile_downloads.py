"""#13 items 10-12: every redirect hop passes the output rule, a file lands only when its size is
proven, and no answer is read whole when it is huge, compressed past reason, or never ends."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from pathlib import Path

import pytest
import requests

from airflow_provider_magi.downloads import check_output_url, download
from airflow_provider_magi.exceptions import MagiDownloadError, MagiResponseError, MagiTransportError
from airflow_provider_magi.hooks.magi import MagiHook
from tests.helpers import CANARY_KEY
from tests.hostile import HostileServer, Seen, http_answer

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 400  # 102,412 bytes, not HTML
VIDEO_V2 = b"\x00\x00\x00\x18ftypisom" + bytes(reversed(range(256))) * 400


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


def fetch(url: str, target: Path, **kwargs: object) -> object:
    with requests.Session() as session:
        return download(session, url, target, allow_insecure_loopback=True, max_attempts=4, **kwargs)


# ---------------------------------------------------------------- 10: redirects and hosts


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "https://169.254.169.254/latest/meta-data/",  # https does not make it an output host
        "https://[fe80::1]/v.mp4",
        "https://[::ffff:169.254.169.254]/v.mp4",
        "https://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
        "https://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://2852039166/latest/",  # 169.254.169.254 written as one number
        "https://0xa9fea9fe/latest/",  # ... in hex
        "https://0251.0376.0251.0376/latest/",  # ... in octal
        "https://0.0.0.0/v.mp4",
        "http://a\\@127.0.0.1/v.mp4",  # urllib and urllib3 disagree on the host
        "http://127.0.0.1\\@cdn.example/v.mp4",
        "https://user:pass@cdn.example/v.mp4",
        "https://cdn.example/v.mp4\r\nX-Injected: 1",
        "http://10.0.0.1/v.mp4",  # plain http off loopback
    ],
)
def test_forbidden_output_urls_are_refused_without_a_request(url: str) -> None:
    with pytest.raises(MagiDownloadError, match=r"refus|not an https|whitespace"):
        check_output_url(url, allow_insecure_loopback=True)


def test_a_name_that_resolves_to_a_metadata_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from airflow_provider_magi import output_urls

    def rebinding_dns(host: str, *args: object, **kwargs: object) -> list:
        assert host == "cdn.attacker.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(output_urls, "resolve", rebinding_dns)
    with pytest.raises(MagiDownloadError, match=r"resolves to 169\.254\.169\.254"):
        check_output_url("https://cdn.attacker.example/v.mp4", allow_insecure_loopback=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")  # the proxy resolves, not us
    check_output_url("https://cdn.attacker.example/v.mp4", allow_insecure_loopback=False)


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/internal.mp4",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://2852039166/latest/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "http://a\\@127.0.0.1/v.mp4",
    ],
)
def test_every_redirect_hop_passes_the_same_rule(tmp_path: Path, location: str) -> None:
    with (
        HostileServer(lambda seen: http_answer(302, b"", {"Location": location})) as server,
        pytest.raises(MagiDownloadError, match=r"refus|not an https|whitespace"),
    ):
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert len(server.seen) == 1  # the hop was refused before any connection to it
    assert files_in(tmp_path) == []


def test_an_allowed_redirect_is_followed_without_the_key(tmp_path: Path) -> None:
    with HostileServer(lambda seen: http_answer(200, VIDEO, {"Content-Type": "video/mp4"})) as target:
        hop = f"{target.base_url}/real.mp4"
        with HostileServer(lambda seen: http_answer(307, b"", {"Location": hop})) as first:
            fetch(f"{first.base_url}/v.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert "authorization" not in target.seen[0].headers
    assert target.seen[0].headers.get("accept-encoding") == "identity"


def test_endless_redirects_stop(tmp_path: Path) -> None:
    with (
        HostileServer(lambda seen: http_answer(302, b"", {"Location": "/again"})) as server,
        pytest.raises(MagiDownloadError, match="redirected more than 5 times"),
    ):
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert len(server.seen) == 6


# ---------------------------------------------------------------- 11: proven sizes


def ranged(content: bytes, seen: Seen, etag: str = '"v1"') -> bytes:
    start = int(seen.headers["range"].removeprefix("bytes=").rstrip("-"))
    return http_answer(
        206,
        content[start:],
        {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}", "ETag": etag},
    )


def test_a_short_206_is_not_taken_for_the_whole_file(tmp_path: Path) -> None:
    half = len(VIDEO) // 2

    def respond(seen: Seen) -> list[bytes | float]:
        if "range" not in seen.headers:  # promises everything, sends half
            return [http_answer(200, VIDEO[:half], {"ETag": '"v1"'}, length=len(VIDEO))]
        start = int(seen.headers["range"].removeprefix("bytes=").rstrip("-"))
        if start == half:  # a partial answer that covers 100 bytes only, honestly labelled
            end = start + 99
            return [
                http_answer(
                    206, VIDEO[start : end + 1], {"Content-Range": f"bytes {start}-{end}/{len(VIDEO)}"}
                )
            ]
        return [ranged(VIDEO, seen)]

    with HostileServer(respond) as server:
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert [s.headers.get("range") for s in server.seen] == [None, f"bytes={half}-", f"bytes={half + 100}-"]


def test_a_resume_asks_for_the_same_object_and_restarts_when_it_changed(tmp_path: Path) -> None:
    half = len(VIDEO) // 2

    def respond(seen: Seen) -> bytes:
        if len(server.seen) == 1:  # the first answer breaks off halfway through version 1
            return http_answer(200, VIDEO[:half], {"ETag": '"v1"'}, length=len(VIDEO))
        # Then the object is replaced, and this server ignores If-Range: a range of version 2.
        if "range" in seen.headers:
            return ranged(VIDEO_V2, seen, etag='"v2"')
        return http_answer(200, VIDEO_V2, {"ETag": '"v2"'})

    with HostileServer(respond) as server:
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert server.seen[1].headers.get("if-range") == '"v1"'
    assert [s.headers.get("range") for s in server.seen] == [None, f"bytes={half}-", None]
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO_V2  # never half of one and half of the other


def test_a_body_without_length_cut_early_is_not_kept(tmp_path: Path) -> None:
    def respond(seen: Seen) -> bytes:  # close-delimited, and always cut; no ranges served
        return http_answer(200, VIDEO[: len(VIDEO) // 3], {"Content-Type": "video/mp4"}, length=-1)

    with HostileServer(respond) as server, pytest.raises(MagiDownloadError, match="download incomplete"):
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert files_in(tmp_path) == []


def test_a_body_without_length_is_kept_once_a_range_request_proves_its_end(tmp_path: Path) -> None:
    def respond(seen: Seen) -> bytes:
        if "range" not in seen.headers:
            return http_answer(200, VIDEO, {"Content-Type": "video/mp4"}, length=-1)
        return http_answer(416, b"", {"Content-Range": f"bytes */{len(VIDEO)}"})

    with HostileServer(respond) as server:
        fetch(f"{server.base_url}/v.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (http_answer(200, b"", {"Content-Type": "video/mp4"}), "empty body"),
        (
            http_answer(200, b"<html><body>Access denied</body></html>", {"Content-Type": "text/html"}),
            "text/html",
        ),
        (http_answer(200, b"  <!DOCTYPE html><p>oops</p>", {"Content-Type": "video/mp4"}), "HTML or XML"),
        (http_answer(200, b'{"error": "expired"}', {"Content-Type": "application/json"}), "application/json"),
        (http_answer(200, gzip.compress(VIDEO), {"Content-Encoding": "gzip"}), "not decompressed"),
    ],
)
def test_a_body_that_is_plainly_not_a_video_is_refused(tmp_path: Path, answer: bytes, reason: str) -> None:
    target = tmp_path / "v.mp4"
    target.write_bytes(b"previous video")
    with HostileServer(lambda seen: answer) as server, pytest.raises(MagiDownloadError, match=reason):
        fetch(f"{server.base_url}/v.mp4", target)
    assert target.read_bytes() == b"previous video"
    assert files_in(tmp_path) == ["v.mp4"]
    assert len(server.seen) == 1  # not retried: another try cannot make it a video


# ---------------------------------------------------------------- 12: bounded API answers


def api_conn(monkeypatch: pytest.MonkeyPatch, base_url: str, **extra: object) -> None:
    conn = {
        "conn_type": "magi",
        "host": base_url,
        "password": CANARY_KEY,
        "extra": {"max_retries": 0, "read_timeout": 5, "request_timeout": 1, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))


def read_prediction(client: str) -> object:
    if client == "sync":
        return MagiHook().get_prediction("p1")
    return asyncio.run(MagiHook().aget_prediction("p1"))


def trickle(where: str) -> list[bytes | float]:
    """One byte every 0.2 s, for a minute: in the status line and headers, or in the body."""
    body = b'{"code": 200, "message": "success", "data": {"id": "p1", "status": "created"}}'
    whole = http_answer(200, body, {"Content-Type": "application/json"})
    split = whole.index(b"\r\n\r\n") + 4 if where == "body" else 0
    parts: list[bytes | float] = [whole[:split]]
    for byte in whole[split:]:
        parts += [0.2, bytes([byte])]
    return parts


@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("client", ["sync", "async"])
def test_an_answer_that_never_ends_hits_the_overall_deadline(
    monkeypatch: pytest.MonkeyPatch, where: str, client: str
) -> None:
    with HostileServer(lambda seen: trickle(where)) as server:
        api_conn(monkeypatch, server.base_url)
        with pytest.raises(MagiTransportError, match=r"no complete answer within request_timeout \(1s\)"):
            read_prediction(client)


def test_a_submit_that_never_ends_is_uncertain_not_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_magi.exceptions import MagiSubmitUncertainError

    with HostileServer(lambda seen: trickle("body")) as server:
        api_conn(monkeypatch, server.base_url, max_retries=3)
        with pytest.raises(MagiSubmitUncertainError, match="request_timeout"):
            MagiHook().create_prediction({"prompt": "x"})
    assert [s.path for s in server.seen if s.method == "POST"][:1] == ["/api/v3/wavespeed-ai/magi-1-24b"]
    assert sum(s.path == "/api/v3/wavespeed-ai/magi-1-24b" for s in server.seen) == 1  # never resent


def huge_json() -> bytes:
    body = b'{"code": 200, "message": "' + b"x" * (50 * 2**20) + b'", "data": {}}'
    return http_answer(200, body, {"Content-Type": "application/json"})


def gzip_bomb() -> bytes:
    inner = b'{"code": 200, "message": "' + b" " * (200 * 2**20) + b'", "data": {}}'
    return http_answer(
        200, gzip.compress(inner, 9), {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )


@pytest.mark.parametrize("answer", [huge_json, gzip_bomb], ids=["50 MB", "gzip bomb"])
@pytest.mark.parametrize("client", ["sync", "async"])
def test_huge_or_bomb_answers_are_not_read_whole(
    monkeypatch: pytest.MonkeyPatch, answer: object, client: str
) -> None:
    payload = answer()  # type: ignore[operator]
    with HostileServer(lambda seen: payload) as server:
        api_conn(monkeypatch, server.base_url, request_timeout=30)
        with pytest.raises(MagiResponseError, match="larger than 4 MiB"):
            read_prediction(client)


def test_an_output_that_trickles_forever_is_cut_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def respond(seen: Seen) -> list[bytes | float]:  # one byte every 0.1 s: never a read timeout
        head = http_answer(200, b"", {"Content-Type": "video/mp4"}, length=len(VIDEO))
        parts: list[bytes | float] = [head]
        for byte in VIDEO[:600]:
            parts += [0.1, bytes([byte])]
        return parts

    with HostileServer(respond) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAGI_DEFAULT",
            json.dumps(
                {
                    "conn_type": "magi",
                    "host": server.base_url,
                    "password": CANARY_KEY,
                    "extra": {"max_retries": 1, "read_timeout": 5, "download_timeout": 1},
                }
            ),
        )
        with pytest.raises(
            MagiDownloadError, match=r"download incomplete after 2 attempts.*download_timeout"
        ):
            MagiHook().download_output(
                f"{server.base_url}/v.mp4", tmp_path / "v.mp4", allow_insecure_loopback=True
            )
    assert files_in(tmp_path) == []


def test_a_deadline_cut_while_header_lines_trickle_is_no_answer_and_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The status line arrives, then the headers trickle: the cut must not read as an empty 200."""

    def status_then_trickle(seen: Seen) -> list[bytes | float]:
        parts: list[bytes | float] = [b"HTTP/1.1 200 OK\r\n"]
        for byte in b"Content-Type: application/json\r\nX-Slow: " + b"x" * 300:
            parts += [0.2, bytes([byte])]
        return parts

    with HostileServer(status_then_trickle) as server:
        api_conn(monkeypatch, server.base_url, max_retries=1, max_retry_wait=0.1)
        with pytest.raises(MagiTransportError, match=r"no complete answer within request_timeout \(1s\)"):
            MagiHook().get_prediction("p1")
    assert len(server.seen) == 2  # a GET cut off is sent again, as any transient failure is


def test_request_timeout_covers_a_proxy_that_never_answers_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through HTTPS_PROXY the CONNECT answer is read before the TLS handshake, inside connect():
    the connect timeout is capped by what is left of request_timeout (1 s), so the client hangs
    up long before the proxy's 15 s (read_timeout 30 s and the default connect_timeout 10 s would
    not have cut it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def silent_proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            seen["request"] = conn.recv(4096).split(b" ", 1)[0]
            conn.settimeout(15)
            try:
                seen["client hung up"] = conn.recv(1) == b""
            except (TimeoutError, OSError):
                seen["client hung up"] = False

    thread = threading.Thread(target=silent_proxy, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api_conn(monkeypatch, "https://api.wavespeed.invalid", read_timeout=30)
    with pytest.raises(MagiTransportError):
        MagiHook().get_prediction("p1")
    thread.join(timeout=20)
    listener.close()
    assert seen == {"request": b"CONNECT", "client hung up": True}
