"""The pool of connections to Apple: httpcore's, with each idle connection handed to one
request at a time.

httpcore's pool (1.0.x) assigns queued requests to connections in one pass, and an HTTP/1.1
connection handed to a request stays idle until that request starts on it, a few turns of the
event loop later. Until then the pool still counts it as available: the same pass hands it to
every queued request, and the passes that other requests make in the meantime hand it out
again. All but one of those requests then find it busy (``ConnectionNotAvailable``), go back
in the queue and try again on the next pass, where newer requests compete with them for the
same connections. Under load some requests lose that race for seconds: with 64 sign-ins at
once, calls to Apple that waited up to 4.7 s for a connection while the median waited none
(docs/performance.md#tails). The same pass also counts every connection, not only the idle
ones, against ``max_keepalive_connections``, so that above that many connections it closes each
connection as soon as it goes idle (httpcore issues 1110 and 1035 upstream).

:class:`FairConnectionPool` makes one change, in that pass: a connection handed to a request is
not available to another until the request is done with it, the queued requests are served in
the order they came, and only idle connections count against the keep-alive limit. The rest of
httpcore's pool (the requests, the connections, the responses and their closing) is unchanged;
the pass relies on the pool's private attributes ``_requests``, ``_connections``,
``_max_connections`` and ``_max_keepalive_connections``, which a test checks.
"""

from __future__ import annotations

import httpcore
from httpcore._async.interfaces import AsyncConnectionInterface

__all__ = ["FairConnectionPool"]


class FairConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool, handing each idle connection to one request at a time."""

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        closing, idle = self._sort_connections()
        for pool_request in [r for r in self._requests if r.is_queued()]:
            origin = pool_request.request.url.origin
            usable = next((c for c in idle if c.can_handle_request(origin)), None)
            if usable is not None:
                idle.remove(usable)
            elif len(self._connections) < self._max_connections:
                usable = self.create_connection(origin)
                self._connections.append(usable)
            elif idle:  # room for a connection to this origin, in place of an idle one
                closing.append(idle.pop(0))
                self._connections.remove(closing[-1])
                usable = self.create_connection(origin)
                self._connections.append(usable)
            else:
                break  # every connection is in use: the queue waits, in its order
            pool_request.assign_to_connection(usable)
        return closing

    def _sort_connections(
        self,
    ) -> tuple[list[AsyncConnectionInterface], list[AsyncConnectionInterface]]:
        """Drop the closed connections; return those to close (expired, or idle beyond the
        keep-alive limit, the oldest first) and the idle ones free for a request."""
        handed = {id(r.connection) for r in self._requests if r.connection is not None}
        closing: list[AsyncConnectionInterface] = []
        idle: list[AsyncConnectionInterface] = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired():
                self._connections.remove(connection)
                closing.append(connection)
            elif id(connection) not in handed and connection.is_available():
                idle.append(connection)
        while len(idle) > self._max_keepalive_connections:
            closing.append(idle.pop(0))
            self._connections.remove(closing[-1])
        return closing, idle
