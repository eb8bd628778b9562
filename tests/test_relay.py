"""The supervisor's relay of its pool's one LISTEN connection (queuectl.worker.relay),
in-process on the real PostgreSQL server."""

import time

import pytest
from sqlalchemy.engine import make_url

from conftest import PG_URL, wait_until
from queuectl.store.dialect import PostgresListener
from queuectl.worker import relay
from queuectl.worker.relay import Relay

pytestmark = pytest.mark.skipif(not PG_URL, reason="the relay is PostgreSQL's (set QUEUECTL_TEST_PG_URL)")


def test_a_stop_does_not_wait_out_the_relays_backoff(monkeypatch):
    # Its LISTEN connection refused (here: a database that does not exist), the relay
    # backs off up to 30 s between tries; a pool's stop must not wait for that.
    monkeypatch.setattr(relay, "RETRY", (20.0, 30.0))
    listener = PostgresListener(make_url(PG_URL).set(database="queuectl_no_such_database").render_as_string(hide_password=False))
    relayed = Relay(listener, wake=None)
    relayed.start()
    wait_until(lambda: listener.last_error, timeout=30, message="the LISTEN connection to be refused")
    started = time.monotonic()
    relayed.stop()
    took = time.monotonic() - started
    assert took < 2.0, took
    assert not relayed._thread.is_alive()
