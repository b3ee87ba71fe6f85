"""Method calls of one session batched: the calls of one turn of the event loop, one request.

Theory of operation
-------------------
Every machine's coroutine calls its methods on its own (``StoreAndStart``,
the job's response, ``Clear``, ...), one at a time under the machine's lock.
When many machines are commanded together — fifty starts from one round of
the agents, fifty job ends in one publish response — each call would be one
``CallRequest``: one message signed, encrypted, decrypted and checked at both
ends, and one turn of the server's request loop.  On this project's machines
that per-message work, not the method, is most of a call's cost (asyncua's
crypto and encoding run in Python; a server handles a session's requests in
order).

:func:`call` queues the call on its session's :class:`CallBatch` and, at the
end of the current turn of the event loop, the batch sends the calls queued
meanwhile as the ``MethodsToCall`` of one ``CallRequest`` (OPC 10000-4
§5.11.2, which exists for this) per :data:`MAX_CALLS` calls.  Each caller gets its own result, its own
Bad status raised as :class:`asyncua.ua.UaStatusCodeError`, exactly as from
``Node.call_method``; a failed request fails each of its callers.  A single
call waits for nothing: it is sent in the same turn it would have been.

* **Order.** The calls of one request may run in any order on the server.
  The backend holds a machine's lock across each of its calls, so a batch
  never holds two calls of one machine, and the order between machines never
  mattered.
* **The server's limit.** ``MaxNodesPerMethodCall`` (the server's operation
  limits) is read once per session, before the first batch; a batch is cut
  to it, and to :data:`MAX_CALLS`, the parts sent together.  A server that answers ``BadTooManyOperations`` all the same is
  sent one call per request from then on.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from asyncua import Node, ua
from asyncua.common.methods import to_variant

__all__ = ["CallBatch", "batches", "call"]

#: Calls per request at most, whatever the server allows (node-opcua's own limit is 1000):
#: a request is answered only when all its calls are done, so a long one delays its first
#: callers and, past the session's timeout, fails all of them; the requests of one turn
#: are sent together (pipelined), each answered as soon as its own calls are done.
MAX_CALLS = 10

_batches: weakref.WeakKeyDictionary[Any, CallBatch] = weakref.WeakKeyDictionary()


def batches() -> list[CallBatch]:
    """The batches of the sessions alive (what they sent: the benchmark's figures)."""
    return list(_batches.values())


async def call(parent: Node, method: ua.NodeId, *args: Any) -> Any:
    """``parent.call_method(method, *args)``, batched with the session's other calls of this
    turn: None, the single output, or the list of outputs."""
    batch = _batches.get(parent.session)
    if batch is None:
        batch = _batches[parent.session] = CallBatch(parent.session)
    outputs = await batch.call(parent.nodeid, method, to_variant(*args))
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


class CallBatch:
    """The calls queued on one session, sent together once per turn of the event loop."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.limit: int | None = None          # MaxNodesPerMethodCall, once read
        self.requests = 0                       # CallRequests sent
        self.calls = 0                          # methods called through them
        self._queue: list[tuple[ua.CallMethodRequest, asyncio.Future[list[Any]]]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, obj: ua.NodeId, method: ua.NodeId, args: list[ua.Variant]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        request = ua.CallMethodRequest(ObjectId=obj, MethodId=method, InputArguments=args)
        self._queue.append((request, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flushing = False
        queued, self._queue = self._queue, []
        queued = [(r, f) for r, f in queued if not f.done()]     # a caller that gave up
        if queued:
            task = asyncio.get_running_loop().create_task(self._send(queued))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, queued: list[tuple[ua.CallMethodRequest,
                                             asyncio.Future[list[Any]]]]) -> None:
        """Every queued caller gets an answer, whatever happens here."""
        try:
            if self.limit is None:
                self.limit = await self._read_limit()
            await asyncio.gather(*[self._send_one(queued[i:i + self.limit])
                                   for i in range(0, len(queued), self.limit)])
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            self._fail(queued, exc)
            raise

    async def _send_one(self, part: list[tuple[ua.CallMethodRequest,
                                               asyncio.Future[list[Any]]]]) -> None:
        try:
            results = await self.session.call([request for request, _f in part])
        except ua.UaStatusCodeError as exc:
            if exc.code == ua.StatusCodes.BadTooManyOperations and len(part) > 1:
                self.limit = 1
                for one in part:
                    await self._send_one([one])
                return
            return self._fail(part, exc)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - each caller's error
            self._fail(part, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.requests += 1
        self.calls += len(part)
        for (_request, future), result in zip(part, results, strict=False):
            if future.done():
                continue
            try:
                result.StatusCode.check()
            except ua.UaStatusCodeError as exc:
                future.set_exception(exc)
                continue
            future.set_result([v.Value for v in result.OutputArguments or []])
        for _request, future in part[len(results):]:
            if not future.done():
                future.set_exception(ua.UaStatusCodeError(ua.StatusCodes.BadUnexpectedError))

    @staticmethod
    def _fail(part: list[tuple[ua.CallMethodRequest, asyncio.Future[list[Any]]]],
              exc: BaseException) -> None:
        for _request, future in part:
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)

    async def _read_limit(self) -> int:
        node = ua.NodeId(ua.Int32(
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerMethodCall))
        try:
            value = await Node(self.session, node).read_value()
            limit = int(value or 0)
        except Exception:  # noqa: BLE001 - optional property; a lost link fails the call next
            limit = 0                  # no stated limit
        return min(limit, MAX_CALLS) if limit > 0 else MAX_CALLS
