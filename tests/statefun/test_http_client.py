"""raystream's HTTP/1.1 client for remote functions (statefun_api.http_caller.RemoteCaller)
against a scripted server on a plain socket: every way a reply can be framed, split or cut
off, keep-alive reuse and a server closing pooled connections, timeouts, a burst of
connections, TLS.

The server reads one request at a time per connection and answers with the pieces its
script returns (bytes to send, CLOSE to drop the connection, a threading.Event to wait
for). No test waits for a time: they wait for results and conditions.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.http_caller import _BACKOFF, CallResult, RemoteCaller
from tests.waiting import wait_for

CLOSE = object()  # script piece: close the connection here


class Request:
    def __init__(self, head: bytes, body: bytes, connection: int) -> None:
        lines = head.split(b"\r\n")
        self.method, self.target, self.version = lines[0].decode().split(" ")
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.decode().partition(":") for line in lines[1:])}
        self.body = body
        self.connection = connection  # which accepted connection carried it (0, 1, ...)


class ScriptedServer:
    """Answers each request with ``script(request, index)``: a list of bytes, CLOSE and
    threading.Event pieces, sent in order (an Event is waited for)."""

    def __init__(self, script: Callable[[Request, int], list], backlog: int = 128, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self.requests: list[Request] = []
        self.accepted = 0
        self.closed_by_client = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}"

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            with self.lock:
                index = self.accepted
                self.accepted += 1
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        with self.lock:
                            self.closed_by_client += 1
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                req = Request(head, b"", index)
                length = int(req.headers.get("content-length", "0"))
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                req.body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append(req)
                    n = len(self.requests) - 1
                for piece in self.script(req, n):
                    if piece is CLOSE:
                        return
                    if isinstance(piece, threading.Event):
                        piece.wait(60)
                        continue
                    conn.sendall(piece)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the accept() blocked in the other thread
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for conn in self.open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # (close() alone does not end a recv() blocked in another thread)
                    conn.close()
                except OSError:
                    pass

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def echo(req: Request, n: int) -> list:
    return [ok(b"echo:" + req.body)]


class Calls:
    """A RemoteCaller and the results it delivered, by call id."""

    def __init__(self, **kwargs) -> None:
        self.caller = RemoteCaller(lambda: None, name="test-http-client", **kwargs)
        self.results: dict[int, CallResult] = {}

    def call(self, url: str, body: bytes, call_id: int | None = None, **ep) -> CallResult:
        call_id = len(self.results) + 1000 if call_id is None else call_id
        self.submit(url, body, call_id, **ep)
        return self.wait(call_id)

    def submit(self, url: str, body: bytes, call_id: int, **ep) -> None:
        ep.setdefault("backoff_initial", timedelta(milliseconds=5))
        ep.setdefault("backoff_max", timedelta(milliseconds=20))
        endpoint = remote_endpoint("t/*", url + "/{function.name}", **ep)
        self.caller.submit(call_id, endpoint, url, body)

    def wait(self, call_id: int) -> CallResult:
        def arrived() -> bool:
            while not self.caller.completions.empty():
                r = self.caller.completions.get_nowait()
                self.results[r.call_id] = r
            return call_id in self.results

        wait_for(arrived, f"the result of call {call_id}")
        return self.results[call_id]

    def close(self) -> None:
        self.caller.close()


@pytest.fixture
def calls():
    c = Calls()
    yield c
    c.close()


# ---------------------------------------------------------------- the request
def test_the_request_is_a_plain_http11_post(calls):
    with ScriptedServer(echo) as server:
        result = calls.call(server.url + "/path%20x?q=a b", b"\x00\x01payload")
        assert result.error is None and result.body == b"echo:\x00\x01payload" and result.status == 200
        req = server.requests[0]
        assert (req.method, req.version) == ("POST", "HTTP/1.1")
        assert req.target == "/path%20x?q=a%20b"  # kept encoded, the space encoded
        assert req.headers["host"] == f"127.0.0.1:{server.port}"
        assert req.headers["content-type"] == "application/octet-stream"
        assert req.headers["content-length"] == "9"
        assert req.headers["user-agent"] == "raystream-statefun"


def test_a_large_body_goes_out_whole(calls):
    body = bytes(range(256)) * 4096  # 1 MiB: head and body written separately
    with ScriptedServer(lambda req, n: [ok(b"%d" % len(req.body))]) as server:
        assert calls.call(server.url, body).body == b"%d" % len(body)
        assert server.requests[0].body == body


# ---------------------------------------------------------------- framing
def test_a_reply_arriving_one_byte_at_a_time_is_read_whole(calls):
    reply = ok(b"hello, world", extra=b"X-Long: " + b"y" * 3000 + b"\r\n")
    with ScriptedServer(lambda req, n: [reply[i : i + 1] for i in range(len(reply))]) as server:
        assert calls.call(server.url, b"x").body == b"hello, world"


def test_a_chunked_reply_with_extensions_and_trailers(calls):
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n"
        b"7\r\n, world\r\n"
        b"0\r\nX-Trailer: t\r\n\r\n"
    )
    with ScriptedServer(lambda req, n: [reply[:20], reply[20:33], reply[33:]]) as server:
        assert calls.call(server.url, b"x").body == b"hello, world"
        assert calls.call(server.url, b"y").body == b"hello, world"  # and the connection was reused
        assert server.accepted == 1


def test_interim_replies_are_skipped(calls):
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + ok(b"final")
    with ScriptedServer(lambda req, n: [reply]) as server:
        assert calls.call(server.url, b"x").body == b"final"


def test_a_reply_framed_by_closing_the_connection(calls):
    reply = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nuntil the end"
    with ScriptedServer(lambda req, n: [reply, CLOSE]) as server:
        assert calls.call(server.url, b"1").body == b"until the end"
        assert calls.call(server.url, b"2").body == b"until the end"
        assert server.accepted == 2  # not reusable: a new connection each time


def test_204_has_no_body(calls):
    with ScriptedServer(lambda req, n: [b"HTTP/1.1 204 No Content\r\n\r\n"]) as server:
        result = calls.call(server.url, b"x")
        assert result.error is None and result.body == b"" and result.status == 204


def test_a_chunked_reply_is_cut_off_at_max_response_bytes(calls):
    gate = threading.Event()
    reply = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"400\r\n" + b"z" * 1024 + b"\r\n"] * 8 + [gate]
    with ScriptedServer(lambda req, n: reply) as server:
        result = calls.call(server.url, b"x", max_response_bytes=4096)
        gate.set()
    assert result.body is None and result.attempts == 1
    assert "larger than max_response_bytes=4096 (more bytes received; not retried)" in result.error


def test_an_error_reply_is_read_up_to_its_excerpt(calls):
    gate = threading.Event()
    big = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10000000\r\n\r\n" + b"bad request: field 17 " + b"." * 8000
    with ScriptedServer(lambda req, n: [big, gate]) as server:
        result = calls.call(server.url, b"x")
        gate.set()
    assert "HTTP 400 (not retried), body 'bad request: field 17 ..." in result.error


# ---------------------------------------------------------------- connections
def test_keep_alive_reuses_one_connection(calls):
    with ScriptedServer(echo) as server:
        for i in range(50):
            assert calls.call(server.url, b"%d" % i).body == b"echo:%d" % i
        assert server.accepted == 1


def test_connection_close_in_a_reply_is_honoured(calls):
    with ScriptedServer(lambda req, n: [ok(b"bye", extra=b"Connection: close\r\n")]) as server:
        for _ in range(3):
            assert calls.call(server.url, b"x").body == b"bye"
        assert server.accepted == 3


def test_a_pooled_connection_the_server_closed_is_replaced_without_a_retry(calls):
    """The server answers and then closes (its keep-alive timeout ran out, say) without
    telling: the next call finds the pooled connection dead and sends on a new one at once."""
    with ScriptedServer(lambda req, n: [ok(b"one"), CLOSE]) as server:
        assert calls.call(server.url, b"1").body == b"one"
        wait_for(lambda: server.accepted == 1 and len(server.requests) == 1, "the first exchange")
        result = calls.call(server.url, b"2")
        assert result.error is None and result.body == b"one"
        assert result.attempts == 1  # not counted as a retry
        assert server.accepted == 2


def test_a_reply_cut_off_in_the_middle_is_retried(calls):
    def script(req: Request, n: int) -> list:
        return [ok(b"complete")[:-3], CLOSE] if n == 0 else [ok(b"complete")]

    with ScriptedServer(script) as server:
        result = calls.call(server.url, b"x")
    assert result.error is None and result.body == b"complete" and result.attempts == 2


def test_garbage_instead_of_http_is_retried_then_named(calls):
    with ScriptedServer(lambda req, n: [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", CLOSE]) as server:
        result = calls.call(server.url, b"x", max_retries=2)
    assert result.body is None and result.attempts == 3
    assert "gave up after 3 attempt(s), 2 retries used up" in result.error
    assert "not an HTTP/1.x reply: 'SSH-2.0-OpenSSH_9.6'" in result.error and f"127.0.0.1:{server.port}" in result.error


def test_an_invalid_content_length_is_named(calls):
    with ScriptedServer(lambda req, n: [b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", CLOSE]) as server:
        result = calls.call(server.url, b"x", max_retries=0)
    assert "HTTP 200 with an invalid Content-Length b'lots'" in result.error


def test_connection_refused_names_the_host():
    c = Calls()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens after this
        result = c.call(f"http://127.0.0.1:{port}", b"x", max_retries=1)
    finally:
        c.close()
    assert result.attempts == 2 and result.status is None
    assert f"Cannot connect to 127.0.0.1:{port}: ConnectionRefusedError" in result.error


# ---------------------------------------------------------------- timeouts
class FakeClock:
    """The caller's event loop on a clock the test moves (asyncio reads ``loop.time()``
    for its timers): timeouts fire exactly when the test says, whatever the machine's load."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 1000.0
        loop.time = lambda: self.now  # type: ignore[method-assign]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.loop.call_soon_threadsafe(lambda: None)  # wake the loop to look at its timers


def the_call(caller: RemoteCaller):
    return wait_for(lambda: next(iter(caller._calls), None), "a call in flight")


def test_the_read_timeout_counts_silence_not_the_whole_reply(calls):
    """A 1 s read timeout: a reply whose pieces come 0.8 s apart completes after 1.6 s; a
    server that stays silent for 1 s fails the attempt."""
    clock = FakeClock(calls.caller.loop)
    steps = [threading.Event() for _ in range(3)]
    reply = ok(b"slow but steady")
    pieces = [reply[:10], steps[0], reply[10:30], steps[1], reply[30:], steps[2]]
    with ScriptedServer(lambda req, n: pieces if n == 0 else [threading.Event()]) as server:
        calls.submit(server.url, b"x", 1, read_timeout=timedelta(seconds=1), max_retries=0)
        call = the_call(calls.caller)
        wait_for(lambda: len(call.head_buf) == 10, "the first piece read")
        first_timer = call.timer
        clock.advance(0.8)
        steps[0].set()
        wait_for(lambda: len(call.head_buf) == 30, "the second piece read (at 0.8 s)")
        clock.advance(0.8)  # 1.6 s after sending, 0.8 s after the last read
        wait_for(lambda: call.timer is not first_timer, "the timer fired and re-armed")
        steps[1].set()
        assert calls.wait(1).body == b"slow but steady"
        steps[2].set()
        calls.submit(server.url, b"y", 2, read_timeout=timedelta(seconds=1), max_retries=0)
        wait_for(lambda: len(server.requests) == 2, "the second request at the server")
        clock.advance(1.0)
        silent = calls.wait(2)
    assert silent.body is None and silent.attempts == 1
    assert "timed out: read timeout of 1 s reached" in silent.error


def test_the_call_timeout_bounds_all_attempts(calls):
    """503s retried with backoff (5 ms doubling to 20 ms) for a call timeout of 1 s: the call
    gives up when the next attempt would start past the timeout. The caller's clock moves only
    between attempts, 20 ms at a time: in real time a loaded machine made an attempt itself
    reach the timeout, a different error (seen once)."""
    clock = FakeClock(calls.caller.loop)

    def settled() -> bool:
        return not calls.caller.completions.empty()

    with ScriptedServer(lambda req, n: [b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"]) as server:
        calls.submit(server.url, b"x", 1, call_timeout=timedelta(seconds=1))
        call = the_call(calls.caller)
        while True:
            wait_for(lambda: settled() or call.phase == _BACKOFF, "an attempt that failed")
            if settled():
                break
            before = call.attempts
            clock.advance(0.02)
            wait_for(lambda before=before: settled() or call.attempts > before, "the next attempt")
        result = calls.wait(1)
    assert result.body is None and 45 <= result.attempts <= 51  # (~1 s / 20 ms)
    assert "the next attempt would pass the call timeout of 1 s; last error: HTTP 503, body 'busy'" in result.error


# ---------------------------------------------------------------- bursts
def test_a_burst_of_calls_opens_connections_a_few_at_a_time():
    """300 calls at once: the client sets up at most 16 connections concurrently (a burst
    beyond a server's listen backlog loses SYNs, each costing a 1 s retransmission), the
    others wait for one of them or for a connection given back; all succeed at once."""
    c = Calls()
    loop = c.caller.loop
    real = loop.create_connection
    state = {"now": 0, "peak": 0, "total": 0}
    lock = threading.Lock()

    async def counted(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["total"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            await asyncio.sleep(0)  # let the other set-ups of the burst start, if allowed
            return await real(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    loop.create_connection = counted
    try:
        with ScriptedServer(echo, backlog=8) as server:
            for i in range(300):
                c.submit(server.url, b"%d" % i, i)
            for i in range(300):
                r = c.wait(i)
                assert r.error is None and r.body == b"echo:%d" % i and r.attempts == 1
    finally:
        c.close()
    assert state["peak"] == 16 and state["total"] <= 300


def test_closing_with_calls_in_flight_leaves_no_thread_and_no_result():
    gate = threading.Event()
    with ScriptedServer(lambda req, n: [gate, ok(b"late")]) as server:
        c = Calls()
        for i in range(5):
            c.submit(server.url, b"x", i)
        wait_for(lambda: len(server.requests) == 5, "the five requests at the server")
        c.close()
        assert not c.caller._thread.is_alive()
        gate.set()
        wait_for(lambda: server.closed_by_client == 5, "the client's connections closed")
    assert c.caller.completions.empty()


# ---------------------------------------------------------------- TLS
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_with_the_hosts_certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    c = Calls()
    try:
        with ScriptedServer(echo, tls=server_tls) as server:
            refused = c.call(server.url, b"x", max_retries=0)  # not in the system's CA store
            assert refused.body is None and "CERTIFICATE_VERIFY_FAILED" in refused.error
            c.caller._tls = ssl.create_default_context(cafile=str(cert))  # as if the CA were installed
            result = c.call(server.url, b"secret")
            assert result.error is None and result.body == b"echo:secret"
            assert server.requests[-1].headers["host"] == f"localhost:{server.port}"
    finally:
        c.close()


# ---------------------------------------------------------------- credentials in the URL
def test_user_and_password_in_the_url_go_as_basic_auth_and_never_into_messages():
    import base64

    from raystream.engine.errors import JobFailed
    from raystream.statefun_api import StatefulFunctions, message_builder
    from raystream.statefun_api.local import LocalDispatchers

    expected = "Basic " + base64.b64encode(b"fn:s3cr et").decode()

    def script(req: Request, n: int) -> list:
        if req.headers.get("authorization") == expected:
            return [ok(b"echo:" + req.body)]
        return [b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nwho are you?"]

    c = Calls()
    try:
        with ScriptedServer(script) as server:
            good = c.call(f"http://fn:s3cr%20et@127.0.0.1:{server.port}", b"x")
            assert good.error is None and good.body == b"echo:x"
            assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"  # no credentials in the Host
            ep = remote_endpoint("remote/*", f"http://fn:wrong@127.0.0.1:{server.port}/{{function.name}}")
            with LocalDispatchers(StatefulFunctions(), egresses=["test/out"], endpoints=[ep]) as run:
                with pytest.raises(JobFailed) as info:
                    run.send(message_builder("remote/greeter", "ann", str_value="hi")).run_until_idle()
    finally:
        c.close()
    msg = str(info.value)
    assert "HTTP 401 (not retried)" in msg and "who are you?" in msg
    assert f"'http://fn:***@127.0.0.1:{server.port}/greeter'" in msg and "wrong" not in msg


# ---------------------------------------------------------------- host names
def test_a_host_name_is_looked_up_once_for_many_connections_and_again_after_a_failure():
    """40 calls at once to http://localhost:<port> open up to 40 connections (16 at a time)
    with ONE lookup; once the host stops answering, its addresses are forgotten and the next
    attempt looks the name up again (the service may have moved)."""
    c = Calls()
    loop = c.caller.loop
    real = loop.getaddrinfo
    lookups: list[str] = []

    async def counted(host, *args, **kwargs):
        lookups.append(host)
        return await real(host, *args, **kwargs)

    loop.getaddrinfo = counted
    gate = threading.Event()
    try:
        with ScriptedServer(lambda req, n: [gate, ok(b"hi")]) as server:
            url = f"http://localhost:{server.port}"
            for i in range(40):
                c.submit(url, b"x", i)
            wait_for(lambda: len(server.requests) == 40, "40 requests at the server, on 40 connections")
            gate.set()
            assert all(c.wait(i).body == b"hi" for i in range(40))
            assert lookups == ["localhost"] and server.accepted == 40
            assert server.requests[0].headers["host"] == f"localhost:{server.port}"
        gone = c.call(url, b"y", call_id=100, max_retries=1)  # nothing listens any more
    finally:
        c.close()
    assert gone.body is None and f"Cannot connect to localhost:{server.port}" in gone.error
    assert lookups.count("localhost") >= 2  # looked up again after the failed set-up


def test_an_unknown_host_name_is_named():
    c = Calls()
    try:
        result = c.call("http://no-such-host.invalid:8000", b"x", max_retries=0)
    finally:
        c.close()
    assert result.body is None and "Cannot connect to no-such-host.invalid:8000: gaierror" in result.error
