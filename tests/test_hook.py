"""MagiHook against the local server over real loopback HTTP: every retry rule, counted."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiAuthError,
    MagiError,
    MagiRejectedError,
    MagiResponseError,
    MagiSubmitUncertainError,
    MagiTransportError,
)
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.testing import Fault, LocalWaveSpeedServer
from tests.helpers import CANARY_KEY, connection_json, wait_until

PROMPT = {"prompt": "a lighthouse in a storm"}


@pytest.fixture
def hook(magi_conn: LocalWaveSpeedServer) -> MagiHook:
    return MagiHook()


def test_create_and_read_a_prediction(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    created = hook.create_prediction({**PROMPT, "seed": 7})
    assert created.status == "created"
    assert created.model == "wavespeed-ai/magi-1-24b"
    assert created.result_url == f"{magi_conn.base_url}/api/v3/predictions/{created.id}/result"
    magi_conn.app.complete_now(created.id)
    done = hook.get_prediction(created.id)
    assert done.is_completed
    assert done.outputs == (f"{magi_conn.base_url}/outputs/{created.id}/0.mp4",)
    assert magi_conn.app.predictions[created.id].inputs == {**PROMPT, "seed": 7}
    assert magi_conn.count("submit") == 1


def test_get_retries_5xx_then_succeeds(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    prediction = hook.create_prediction(PROMPT)
    magi_conn.set_faults([Fault(route="result", kind="status", status=503, times=2)])
    assert hook.get_prediction(prediction.id).id == prediction.id
    assert [r.status for r in magi_conn.requests if r.route == "result"] == [503, 503, 200]


def test_get_honours_retry_after_on_429(hook: MagiHook, magi_conn: LocalWaveSpeedServer, caplog) -> None:
    prediction = hook.create_prediction(PROMPT)
    magi_conn.set_faults([Fault(route="result", kind="status", status=429, retry_after=0.05, times=1)])
    with caplog.at_level("WARNING"):
        hook.get_prediction(prediction.id)
    assert magi_conn.count("result", status=429) == 1
    assert magi_conn.count("result", status=200) == 1


def test_get_retries_html_gateway_page_and_dropped_connection(
    hook: MagiHook, magi_conn: LocalWaveSpeedServer
) -> None:
    prediction = hook.create_prediction(PROMPT)
    magi_conn.set_faults(
        [
            Fault(route="result", kind="html", status=502, times=1),
            Fault(route="result", kind="drop", times=1),
        ]
    )
    assert hook.get_prediction(prediction.id).id == prediction.id
    assert [r.status for r in magi_conn.requests if r.route == "result"] == [502, 0, 200]


def test_get_gives_up_after_max_retries(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="result", kind="status", status=500)])
    with pytest.raises(MagiAPIError, match="500"):
        hook.get_prediction("abc")
    assert magi_conn.count("result") == 4  # max_retries=3 in the test connection


def test_post_is_resent_after_429(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="status", status=429, retry_after=0.05, times=2)])
    hook.create_prediction(PROMPT)
    assert [r.status for r in magi_conn.requests if r.route == "submit"] == [429, 429, 200]
    assert len(magi_conn.app.predictions) == 1


def test_post_is_never_resent_after_a_dropped_connection(
    hook: MagiHook, magi_conn: LocalWaveSpeedServer
) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="drop_after_accept", times=1)])
    with pytest.raises(MagiSubmitUncertainError, match="not sent again"):
        hook.create_prediction(PROMPT)
    assert magi_conn.count("submit") == 1
    assert len(magi_conn.app.predictions) == 1  # accepted once, billed once


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_post_is_not_resent_after_5xx(hook: MagiHook, magi_conn: LocalWaveSpeedServer, status: int) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="status", status=status, times=1)])
    with pytest.raises(MagiSubmitUncertainError, match=str(status)):
        hook.create_prediction(PROMPT)
    assert magi_conn.count("submit") == 1


def test_post_times_out_once_and_is_not_resent(magi_conn: LocalWaveSpeedServer, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(magi_conn, read_timeout=0.3))
    magi_conn.set_faults([Fault(route="submit", kind="slow", delay=1.0, times=1)])
    with pytest.raises(MagiSubmitUncertainError, match="may have accepted"):
        MagiHook().create_prediction(PROMPT)
    # The slow request is still being answered; once it is, the server has seen exactly one.
    wait_until(lambda: magi_conn.count("submit") >= 1, timeout=5)
    time.sleep(0.2)
    assert magi_conn.count("submit") == 1
    assert len(magi_conn.app.predictions) == 1


def test_post_malformed_200_is_uncertain(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="submit", kind="malformed_json", times=1)])
    with pytest.raises(MagiSubmitUncertainError, match="expected a JSON envelope"):
        hook.create_prediction(PROMPT)
    assert magi_conn.count("submit") == 1


def test_get_malformed_200_fails_at_once(hook: MagiHook, magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="result", kind="malformed_json", times=1)])
    with pytest.raises(MagiResponseError, match="expected a JSON envelope"):
        hook.get_prediction("abc")
    assert magi_conn.count("result") == 1


def test_envelope_error_inside_http_200_is_retried_for_get(
    hook: MagiHook, magi_conn: LocalWaveSpeedServer
) -> None:
    prediction = hook.create_prediction(PROMPT)
    magi_conn.set_faults([Fault(route="result", kind="envelope_error", status=503, times=1)])
    assert hook.get_prediction(prediction.id).id == prediction.id
    assert magi_conn.count("result") == 2


def test_connection_refused_is_retried_then_reported(monkeypatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {
        "conn_type": "magi",
        "host": f"http://127.0.0.1:{port}",
        "password": CANARY_KEY,
        "extra": {"max_retries": 2, "max_retry_wait": 0.05},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
    with pytest.raises(MagiTransportError, match="could not connect"):
        MagiHook().create_prediction(PROMPT)


@pytest.mark.parametrize(
    ("status", "error_class", "text"),
    [
        (400, MagiRejectedError, "inputs were rejected"),
        (401, MagiAuthError, "check the API key (password) of Airflow connection 'magi_default'"),
        (403, MagiAuthError, "lacks permission or balance"),
        (404, MagiRejectedError, "does not exist"),
        (422, MagiRejectedError, "did not match the model's schema"),
    ],
)
def test_non_retryable_statuses_fail_at_once(
    hook: MagiHook, magi_conn: LocalWaveSpeedServer, status: int, error_class: type, text: str
) -> None:
    magi_conn.set_faults([Fault(route="any", kind="status", status=status)])
    with pytest.raises(error_class) as caught:
        hook.get_prediction("abc")
    assert text in str(caught.value)
    assert magi_conn.count("result") == 1
    with pytest.raises(error_class):
        hook.create_prediction(PROMPT)
    assert magi_conn.count("submit") == 1


def test_wrong_key_is_401_with_the_connection_named(magi_conn: LocalWaveSpeedServer, monkeypatch) -> None:
    conn = {"conn_type": "magi", "host": magi_conn.base_url, "password": "wrong-key"}
    monkeypatch.setenv("AIRFLOW_CONN_MY_MAGI", json.dumps(conn))
    with pytest.raises(MagiAuthError, match="connection 'my_magi'"):
        MagiHook("my_magi").create_prediction(PROMPT)
    assert len(magi_conn.app.predictions) == 0


def test_server_side_validation_message_reaches_the_user(hook: MagiHook) -> None:
    with pytest.raises(MagiRejectedError, match="seed must be an integer"):
        hook.create_prediction({"prompt": "x", "seed": 2**40})


def test_test_connection(magi_conn: LocalWaveSpeedServer, monkeypatch) -> None:
    magi_conn.set_balance(12.3)
    ok, message = MagiHook().test_connection()
    assert ok, message
    expected = f"Connection OK, balance $12.30: WaveSpeed at {magi_conn.base_url} accepted the API key."
    assert message == expected
    assert magi_conn.count("balance") == 1 and magi_conn.count("result") == 0  # read the (free) balance
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", json.dumps({**magi_conn.connection_uri_json(), "password": "nope"})
    )
    ok, message = MagiHook().test_connection()
    assert not ok
    assert message == (
        f"WaveSpeed at {magi_conn.base_url} refused the API key: 401 Unauthorized: invalid or missing "
        "API key. Fix: check the API key."
    )
    assert len(magi_conn.app.predictions) == 0  # testing never starts a generation


def test_airflow_connections_test_shows_the_balance(magi_conn: LocalWaveSpeedServer, monkeypatch) -> None:
    """The CLI prints only "Connection success!"; the hook prints its own line there, and only
    there. Logging may write to the same stream, so only the hook's marked line is read."""
    import io
    import sys

    def said(stream: io.StringIO) -> list[str]:
        return [line for line in stream.getvalue().splitlines() if line.startswith("Connection OK")]

    magi_conn.set_balance(7.5)
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stdout", quiet)
    assert MagiHook().test_connection()[0]  # a worker, the api-server: nothing printed
    assert said(quiet) == []
    shown = io.StringIO()
    monkeypatch.setattr(sys, "stdout", shown)
    monkeypatch.setattr(sys, "argv", ["airflow", "connections", "test", "magi_default"])
    ok, message = MagiHook().test_connection()
    assert ok and said(shown) == [message]
    assert "balance $7.50" in message


def test_test_connection_without_a_balance_endpoint_probes_the_key(
    magi_conn: LocalWaveSpeedServer, monkeypatch
) -> None:
    magi_conn.set_faults([Fault(route="balance", kind="status", status=404)])
    ok, message = MagiHook().test_connection()
    assert ok, message
    assert message == f"WaveSpeed at {magi_conn.base_url} accepted the API key."
    assert magi_conn.count("result", status=404) == 1  # the old probe: a prediction that cannot exist
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", json.dumps({**magi_conn.connection_uri_json(), "password": "nope"})
    )
    ok, message = MagiHook().test_connection()
    assert not ok and "refused the API key: 401" in message
    assert len(magi_conn.app.predictions) == 0


def test_missing_connection_uses_env_key(monkeypatch, caplog) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", CANARY_KEY)
    settings = MagiHook().settings  # only magi_default falls back (test_money_hook.py)
    assert settings.base_url == "https://api.wavespeed.ai"
    assert settings.api_key == CANARY_KEY
    assert CANARY_KEY not in repr(settings)


def test_missing_connection_without_env_key_says_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    with pytest.raises(MagiError, match="does not exist and \\$WAVESPEED_API_KEY is not set"):
        MagiHook().settings


def test_connection_without_key_is_refused_before_any_request(magi_conn, monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", json.dumps({"conn_type": "magi", "host": magi_conn.base_url})
    )
    with pytest.raises(MagiAuthError, match="has no API key"):
        MagiHook().create_prediction(PROMPT)
    assert magi_conn.requests == []


def test_bad_extra_is_named(magi_conn, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(magi_conn, read_timeout="fast"))
    with pytest.raises(MagiError, match="extra 'read_timeout' must be a number"):
        MagiHook().settings


def test_any_model_path_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    models = ("wavespeed-ai/magi-1-24b", "wavespeed-ai/other-model", "wavespeed-ai/z-image/turbo")
    with LocalWaveSpeedServer(api_key=CANARY_KEY, models=models) as server:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server))
        hook = MagiHook()
        assert hook.create_prediction({"prompt": "x"}, model="wavespeed-ai/other-model").model == models[1]
        assert hook.create_prediction({"prompt": "x"}, model="wavespeed-ai/z-image/turbo").model == models[2]
        # A mistyped model is a 404 that names it, at once, without a retry.
        with pytest.raises(MagiRejectedError, match="Model 'wavespeed-ai/magi-1-42b' not found"):
            hook.create_prediction(PROMPT, model="wavespeed-ai/magi-1-42b")
        assert server.count("submit") == 3
    for bad in ("../../etc", "magi", "a/b/c/d", "a/./b"):
        with pytest.raises(MagiError, match="owner/name"):
            hook.create_prediction(PROMPT, model=bad)


def test_canary_key_never_in_logs_reprs_or_errors(
    magi_conn: LocalWaveSpeedServer, monkeypatch, caplog, capsys
) -> None:
    caplog.set_level("DEBUG")
    hook = MagiHook()
    texts = [repr(hook), repr(hook.settings)]
    magi_conn.set_faults(
        [
            Fault(route="result", kind="status", status=503, times=1),
            Fault(route="submit", kind="drop_after_accept", times=1),
        ]
    )
    for call in (lambda: hook.get_prediction("x"), lambda: hook.create_prediction(PROMPT)):
        try:
            call()
        except Exception as error:
            texts += [str(error), repr(error)]
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT",
        json.dumps({**magi_conn.connection_uri_json(), "password": CANARY_KEY + "x"}),
    )
    try:
        MagiHook().create_prediction(PROMPT)
    except Exception as error:
        texts += [str(error), repr(error)]
    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    assert "Retrying in" in caplog.text + captured.out + captured.err  # the logs were captured
    assert len(texts) > 6
    for text in texts:
        assert CANARY_KEY not in text


def test_async_get_uses_the_same_rules(magi_conn: LocalWaveSpeedServer) -> None:
    created = MagiHook().create_prediction(PROMPT)
    magi_conn.set_faults(
        [
            Fault(route="result", kind="status", status=503, times=1),
            Fault(route="result", kind="drop", times=1),
        ]
    )

    async def read() -> str:
        return (await MagiHook().aget_prediction(created.id)).status

    assert asyncio.run(read()) in ("created", "processing", "completed")
    assert [r.status for r in magi_conn.requests if r.route == "result"] == [503, 0, 200]


def test_async_non_retryable_fails_at_once(magi_conn: LocalWaveSpeedServer) -> None:
    magi_conn.set_faults([Fault(route="result", kind="status", status=401)])

    async def read() -> None:
        await MagiHook().aget_prediction("abc")

    with pytest.raises(MagiAuthError):
        asyncio.run(read())
    assert magi_conn.count("result") == 1


def test_async_client_is_shared_per_loop(magi_conn: LocalWaveSpeedServer) -> None:
    from airflow_provider_magi.hooks.magi import shared_async_client

    async def clients() -> tuple[object, object]:
        first = shared_async_client(await MagiHook().aget_settings())
        second = shared_async_client(await MagiHook().aget_settings())
        return first, second

    first, second = asyncio.run(clients())
    assert first is second


def test_the_shared_session_closes_when_its_loop_ends(magi_conn: LocalWaveSpeedServer) -> None:
    """No socket or session outlives asyncio.run: aiohttp would log 'Unclosed client session'."""
    from airflow_provider_magi.hooks.async_client import SharedAsync, shared_async_client

    async def poll() -> SharedAsync:
        hook = MagiHook()
        with pytest.raises(MagiError):
            await hook.aget_prediction("no-such-prediction")
        shared = shared_async_client(await hook.aget_settings())
        assert not shared.session.closed
        return shared

    shared = asyncio.run(poll())
    assert shared.session.closed
    assert magi_conn.count("result") == 1


def test_the_triggerers_client_goes_through_the_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY is read once per session, as the worker's requests session reads it."""
    from tests.hostile import HostileServer, Seen, envelope

    seen: list[Seen] = []

    def proxy(request: Seen) -> bytes:
        seen.append(request)
        return envelope({"id": "abc", "model": "wavespeed-ai/magi-1-24b", "status": "processing"})

    with HostileServer(proxy) as server:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.base_url)
        target = "http://127.0.0.1:9"  # nothing listens there: only the proxy can answer
        conn = {"conn_type": "magi", "host": target, "password": CANARY_KEY, "extra": {"max_retries": 0}}
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
        prediction = asyncio.run(MagiHook().aget_prediction("abc"))
    assert prediction.status == "processing"
    assert [request.path for request in seen] == [f"{target}/api/v3/predictions/abc/result"]


def test_both_clients_check_certificates_against_the_same_bundle(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE (a corporate CA) holds in the triggerer as in the worker; without it, an
    unknown certificate is refused by both, before anything is read."""
    from tests.hostile import HostileServer, Seen, envelope, loopback_certificate

    bundle, tls = loopback_certificate(tmp_path)

    def respond(request: Seen) -> bytes:
        return envelope({"id": "abc", "model": "wavespeed-ai/magi-1-24b", "status": "processing"})

    with HostileServer(respond, tls=tls) as server:
        conn = {
            "conn_type": "magi",
            "host": server.base_url,
            "password": CANARY_KEY,
            "extra": {"max_retries": 0},
        }
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", json.dumps(conn))
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(MagiError, match=r"(?i)certificate"):
            asyncio.run(MagiHook().aget_prediction("abc"))
        with pytest.raises(MagiError, match=r"(?i)certificate"):
            MagiHook().get_prediction("abc")
        assert server.seen == []  # refused during the handshake: no request was read

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        assert asyncio.run(MagiHook().aget_prediction("abc")).status == "processing"
        assert MagiHook().get_prediction("abc").status == "processing"


def test_triggers_in_one_loop_share_one_connection_lookup(
    magi_conn: LocalWaveSpeedServer, monkeypatch
) -> None:
    import airflow_provider_magi.hooks.settings as hook_module

    calls = []
    real_lookup = hook_module.get_async_connection

    async def counting_lookup(*args, **kwargs):
        calls.append(args[0])
        return await real_lookup(*args, **kwargs)

    monkeypatch.setattr(hook_module, "get_async_connection", counting_lookup)

    async def many() -> set[str]:
        settings = await asyncio.gather(*(MagiHook().aget_settings() for _ in range(200)))
        return {s.base_url for s in settings}

    assert asyncio.run(many()) == {magi_conn.base_url}
    assert calls == ["magi_default"]


def test_a_failed_connection_lookup_is_not_cached(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MAGI_DEFAULT", raising=False)
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)

    async def twice() -> str:
        with pytest.raises(MagiError, match="does not exist"):
            await MagiHook().aget_settings()
        monkeypatch.setenv("WAVESPEED_API_KEY", CANARY_KEY)
        return (await MagiHook().aget_settings()).base_url

    assert asyncio.run(twice()) == "https://api.wavespeed.ai"


def test_a_typo_in_a_connection_extra_is_warned_about_with_the_close_match(
    server: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(server, max_retry=9))
    settings = MagiHook().settings
    assert settings.max_retries == 3  # the typo changed nothing: the test connection's own value
    assert "extra 'max_retry' is not one this provider reads (did you mean 'max_retries'?)" in task_logs()
