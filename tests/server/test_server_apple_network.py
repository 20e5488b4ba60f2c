"""The network under the calls to Apple (``appleconnect.server.apple_network``), against real
servers on loopback: the same answers as httpx's default transport, connections kept alive and
reused, a connection the server closed while idle replaced without an error, httpx's errors for
a refused connection, timeouts and an untrusted certificate, and TLS with a local CA."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appleconnect.server import metrics
from appleconnect.server.apple_network import AsyncioBackend, apple_http_transport
from appleconnect.server.apple_pool import FairConnectionPool


class _Server:
    """A small HTTP/1.1 server (h11 on asyncio streams) that counts the connections it accepts
    and can close a connection once it has answered and gone idle."""

    def __init__(self) -> None:
        self.accepted = 0
        self.close_idle_after: float | None = None
        self.closed_idle = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while isinstance(request := await self._next(conn, reader, idle=True), h11.Request):
                body = b""
                while not isinstance(event := await self._next(conn, reader), h11.EndOfMessage):
                    assert isinstance(event, h11.Data)
                    body += event.data
                await self._answer(conn, writer, request, body)
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()

    async def _next(
        self, conn: h11.Connection, reader: asyncio.StreamReader, idle: bool = False
    ) -> object:
        while (event := conn.next_event()) is h11.NEED_DATA:
            if idle and self.close_idle_after is not None:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.close_idle_after)
                except TimeoutError:
                    self.closed_idle.set()
                    raise
            else:
                data = await reader.read(65536)
            conn.receive_data(data)
        return event

    async def _answer(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        method, target = request.method.decode(), request.target.decode()
        if target == "/slow":
            await asyncio.sleep(2)
        if target == "/pause":
            await asyncio.sleep(0.2)
        if target == "/chunked":
            headers = [("content-type", "text/plain"), ("transfer-encoding", "chunked")]
            writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
            for part in (b"one,", b"two,", b"three"):
                writer.write(conn.send(h11.Data(data=part)) or b"")
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return
        status = 404 if target == "/missing" else 200
        content = b'{"method":"' + method.encode() + b'","body":"' + body + b'"}'
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(content))),
            ("x-target", target),
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=content)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    running = _Server()
    yield running
    await running.stop()


@pytest.fixture
async def base(server: _Server) -> str:
    return await server.start()


def _client(
    transport: httpx.AsyncBaseTransport | None = None, **kwargs: object
) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or apple_http_transport(), **kwargs)  # type: ignore[arg-type]


async def _exchanges(
    client: httpx.AsyncClient, base: str
) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """A set of calls whose answers are compared between transports (the Date header aside)."""

    async def streamed_body() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            yield part

    answers = [
        await client.get(f"{base}/hello"),
        await client.post(f"{base}/echo", content=b"x" * 1000),
        await client.post(f"{base}/echo", content=streamed_body()),
        await client.post(f"{base}/form", data={"grant": "code"}),
        await client.get(f"{base}/missing"),
        await client.get(f"{base}/chunked"),
    ]
    async with client.stream("GET", f"{base}/chunked") as streamed:
        parts = [part async for part in streamed.aiter_raw()]
    assert b"".join(parts) == b"one,two,three"
    return [
        (r.status_code, [(k, v) for k, v in r.headers.items() if k != "date"], r.content)
        for r in answers
    ]


async def test_same_answers_as_httpx_default_transport(base: str) -> None:
    async with _client(httpx.AsyncHTTPTransport()) as default, _client() as ours:
        expected = await _exchanges(default, base)
        assert await _exchanges(ours, base) == expected
    assert expected[1][2] == b'{"method":"POST","body":"' + b"x" * 1000 + b'"}'
    assert expected[2][2] == b'{"method":"POST","body":"abc"}'
    assert expected[5][2] == b"one,two,three"
    assert ("transfer-encoding", "chunked") in expected[5][1]


async def test_connections_kept_alive_and_reused(server: _Server, base: str) -> None:
    async with _client() as client:
        for _ in range(5):
            assert (await client.get(f"{base}/hello")).status_code == 200
        assert server.accepted == 1
        answers = await asyncio.gather(*(client.get(f"{base}/hello") for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        after_concurrent = server.accepted
        assert 1 <= after_concurrent <= 8
        for _ in range(5):
            await client.post(f"{base}/echo", content=b"again")
        answers = await asyncio.gather(
            *(client.get(f"{base}/hello") for _ in range(after_concurrent))
        )
        assert server.accepted == after_concurrent


async def test_a_burst_of_calls_keeps_its_connections(server: _Server, base: str) -> None:
    """Every connection a burst opened stays for the next one (httpx keeps 20 by default: a
    second burst of 40 would open 20 more, a TCP and TLS handshake each)."""
    async with _client() as client:
        for _ in range(2):
            answers = await asyncio.gather(*(client.get(f"{base}/pause") for _ in range(40)))
            assert [a.status_code for a in answers] == [200] * 40
            assert server.accepted == 40


def _counting(pool_class: type[httpcore.AsyncConnectionPool]) -> type[Any]:
    """``pool_class`` counting the requests that found their connection taken."""

    class Counting(pool_class):  # type: ignore[misc,valid-type]
        taken = 0

        def create_connection(self, origin: httpcore.Origin) -> Any:
            connection = super().create_connection(origin)
            handle = connection.handle_async_request

            async def counted(request: httpcore.Request) -> httpcore.Response:
                try:
                    return await handle(request)
                except httpcore.ConnectionNotAvailable:
                    Counting.taken += 1
                    raise

            connection.handle_async_request = counted
            return connection

    return Counting


@pytest.mark.parametrize(
    ("pool_class", "fair"),
    [(FairConnectionPool, True), (httpcore.AsyncConnectionPool, False)],
    ids=["ours", "httpcore"],
)
async def test_queued_requests_get_connections_one_each_in_their_order(
    server: _Server, base: str, pool_class: type[httpcore.AsyncConnectionPool], fair: bool
) -> None:
    """40 requests at once on 4 connections: each connection goes to one request at a time,
    in the order the requests came. httpcore's own pool hands a connection to every queued
    request at once, and all but one go back in the queue."""
    counting = _counting(pool_class)
    pool = counting(max_connections=4, network_backend=AsyncioBackend())
    sent: list[int] = []

    async def one(i: int) -> None:
        answer = await pool.request("GET", f"{base}/pause")
        assert answer.status == 200
        sent.append(i)

    async with pool:
        await asyncio.gather(*(one(i) for i in range(40)))
    assert server.accepted == 4
    if fair:
        assert counting.taken == 0
        # Answers come back in batches of four (one per connection), in the order asked.
        assert [sorted(sent[k : k + 4]) for k in range(0, 40, 4)] == [
            list(range(k, k + 4)) for k in range(0, 40, 4)
        ]
    else:
        assert counting.taken > 0


def test_the_pool_s_private_names_are_there() -> None:
    """FairConnectionPool's pass relies on these attributes of httpcore's pool."""
    pool = FairConnectionPool(max_connections=3, max_keepalive_connections=2)
    assert pool._requests == []
    assert pool._connections == []
    assert (pool._max_connections, pool._max_keepalive_connections) == (3, 2)


async def test_connection_closed_by_the_server_while_idle_is_replaced(
    server: _Server, base: str
) -> None:
    server.close_idle_after = 0.1
    async with _client() as client:
        assert (await client.get(f"{base}/hello")).status_code == 200
        await asyncio.wait_for(server.closed_idle.wait(), 5)
        await asyncio.sleep(0.05)  # the FIN reaches the client's event loop
        for _ in range(3):
            assert (await client.get(f"{base}/hello")).status_code == 200
    assert server.accepted == 2


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_slow_answer_is_a_read_timeout(base: str) -> None:
    async with _client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{base}/slow", timeout=httpx.Timeout(5.0, read=0.2))
        assert (await client.get(f"{base}/hello")).status_code == 200


async def test_unanswered_connect_is_a_connect_timeout(full_backlog: int) -> None:
    async with _client() as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(
                f"http://127.0.0.1:{full_backlog}/", timeout=httpx.Timeout(5.0, connect=0.3)
            )


async def test_pool_timeout(base: str) -> None:
    one = apple_http_transport(limits=httpx.Limits(max_connections=1))
    async with _client(one) as client, client.stream("GET", f"{base}/hello"):
        with pytest.raises(httpx.PoolTimeout):
            await client.get(f"{base}/hello", timeout=httpx.Timeout(5.0, pool=0.1))


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and neither reads nor writes."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield silent.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    silent.close()


async def test_unsent_body_is_a_write_timeout(silent_port: int) -> None:
    async with _client() as client:
        with pytest.raises(httpx.WriteTimeout):
            await client.post(
                f"http://127.0.0.1:{silent_port}/",
                content=b"x" * (64 * 1024 * 1024),
                timeout=httpx.Timeout(5.0, write=0.3),
            )


async def test_silent_tls_handshake_is_a_connect_timeout(silent_port: int) -> None:
    async with _client() as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(
                f"https://127.0.0.1:{silent_port}/", timeout=httpx.Timeout(5.0, connect=0.3)
            )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA and a leaf certificate for 127.0.0.1 and localhost signed by it: (ca, cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("appleconnect test CA", ca_key, None, ca_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("localhost", leaf_key, ca.subject, ca_key)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"


@pytest.fixture
async def tls_base(server: _Server, tls_files: tuple[Path, Path, Path]) -> str:
    _ca, cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return await server.start(context)


async def test_tls_with_a_trusted_ca(
    server: _Server, tls_base: str, tls_files: tuple[Path, Path, Path]
) -> None:
    trusting = httpx.create_ssl_context(verify=ssl.create_default_context(cafile=tls_files[0]))
    async with _client(apple_http_transport(ssl_context=trusting)) as client:
        expected = None
        async with _client(httpx.AsyncHTTPTransport(verify=trusting)) as default:
            expected = await _exchanges(default, tls_base)
        assert await _exchanges(client, tls_base) == expected
        named = tls_base.replace("127.0.0.1", "localhost")
        answer = await client.get(f"{named}/hello")
        assert answer.status_code == 200
        assert answer.extensions["network_stream"].get_extra_info("ssl_object") is not None


async def test_tls_with_an_untrusted_certificate_is_a_connect_error(tls_base: str) -> None:
    async with _client() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"{tls_base}/hello")


async def test_unix_socket(tmp_path: Path) -> None:
    served = _Server()
    path = str(tmp_path / "s.sock")
    served.server = await asyncio.start_unix_server(served._serve, path)
    try:
        async with _client(apple_http_transport(uds=path)) as client:
            assert (await client.get("http://apple/hello")).status_code == 200
            assert (await client.get("http://apple/hello")).status_code == 200
        assert served.accepted == 1
    finally:
        await served.stop()


async def test_stream_details(server: _Server, base: str) -> None:
    port = int(base.rsplit(":", 1)[1])
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    stream = await AsyncioBackend().connect_tcp(
        "127.0.0.1", port, timeout=1.0, local_address="127.0.0.1", socket_options=options
    )
    assert stream.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
    assert stream.get_extra_info("ssl_object") is None
    assert stream.get_extra_info("is_readable") is False
    await stream.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=1.0)
    received = b""
    while chunk := await stream.read(7, timeout=1.0):
        assert len(chunk) <= 7
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b'"body":""}')
    assert stream.get_extra_info("is_readable") is True  # end of stream seen, no system call
    await stream.aclose()
    with pytest.raises(httpcore.WriteError):
        await stream.write(b"more")


async def test_the_service_calls_apple_through_this_backend(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If httpx renamed the pool the transport replaces, the calls would silently go back to
    httpx's default backend: a call through the service's transport must open its connection
    here."""
    opened: list[tuple[str, int]] = []
    connect = AsyncioBackend.connect_tcp

    async def counting(self: AsyncioBackend, host: str, port: int, **kwargs: object) -> object:
        opened.append((host, port))
        return await connect(self, host, port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AsyncioBackend, "connect_tcp", counting)
    transport = metrics.AppleTransport(None)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post(f"{base}/token", content=b"x")).status_code == 200
    assert opened == [("127.0.0.1", int(base.rsplit(":", 1)[1]))]


async def _uvloop_scenarios(tls_files: tuple[Path, Path, Path], full_backlog: int) -> None:
    served = _Server()
    base = await served.start()
    async with _client(httpx.AsyncHTTPTransport()) as default, _client() as client:
        assert await _exchanges(client, base) == await _exchanges(default, base)
        accepted = served.accepted
        served.close_idle_after = 0.1
        await client.get(f"{base}/hello")
        await asyncio.wait_for(served.closed_idle.wait(), 5)
        await asyncio.sleep(0.05)
        assert (await client.get(f"{base}/hello")).status_code == 200
        assert served.accepted == accepted + 1
        served.close_idle_after = None
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{base}/slow", timeout=httpx.Timeout(5.0, read=0.2))
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(
                f"http://127.0.0.1:{full_backlog}/", timeout=httpx.Timeout(5.0, connect=0.3)
            )
    await served.stop()
    ca, cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls = _Server()
    tls_base = (await tls.start(context)).replace("127.0.0.1", "localhost")
    trusting = httpx.create_ssl_context(verify=ssl.create_default_context(cafile=ca))
    async with _client(apple_http_transport(ssl_context=trusting)) as client:
        for _ in range(3):
            assert (await client.post(f"{tls_base}/echo", content=b"tls")).status_code == 200
    assert tls.accepted == 1
    async with _client() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"{tls_base}/hello")
    await tls.stop()


def test_under_uvloop(tls_files: tuple[Path, Path, Path], full_backlog: int) -> None:
    """The service serves on uvloop when it is installed: the same behaviour there."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_uvloop_scenarios(tls_files, full_backlog))


def test_addresses_alternate_between_families() -> None:
    from appleconnect.server.apple_network import _interleave

    six, four = ("::1", 443, 0, 0), ("127.0.0.1", 443)
    other_six, other_four = ("::2", 443, 0, 0), ("127.0.0.2", 443)
    mixed = _interleave([six, other_six, four, other_four])
    assert mixed == [("::1", 443), ("127.0.0.1", 443), ("::2", 443), ("127.0.0.2", 443)]
    assert _interleave([four, six]) == [("127.0.0.1", 443), ("::1", 443)]


async def test_a_failure_other_than_httpx_is_raised_as_it_is_and_counted() -> None:
    """Not hidden behind an UnboundLocalError from the metrics' outcome."""

    class Broken(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise RuntimeError("broken transport")

    before = metrics.APPLE_CALLS.labels("token", "error")._value.get()
    async with httpx.AsyncClient(transport=metrics.AppleTransport(Broken())) as client:
        with pytest.raises(RuntimeError, match="broken transport"):
            await client.post("https://appleid.apple.com/auth/token")
    assert metrics.APPLE_CALLS.labels("token", "error")._value.get() == before + 1
