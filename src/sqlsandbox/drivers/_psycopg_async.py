"""The asyncio twin of :mod:`._psycopg`: ``psycopg.AsyncConnection`` in a sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._direct import CursorProxy, control_verb
from ._psycopg import ProxyBase, SandboxTransaction, swallow

if TYPE_CHECKING:
    from ..ownership import Lease

__all__ = ["AsyncSandboxConnection", "AsyncSandboxCursor"]


class AsyncSandboxConnection(ProxyBase):
    """An owner's asyncio psycopg connection as one ``AsyncConnection.connect()`` sees it."""

    __slots__ = ()

    async def _fork(self) -> Lease:
        lease = await self._route.sandbox.alease(self._connector)
        if lease is None or lease.adapter is not self._lease.adapter:
            raise self._check.error(self._lease)
        lease.nest_in(self._blocks[-1]._lease if self._blocks else self._lease)
        return lease

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._closed or not self._check.ok():
            await self._adenied()
        lease = self._lease
        query = args[0]
        if type(query) is str:
            verb = control_verb(query)
            if verb is not None:
                await self._control(verb)
                return None
        wrap = False
        if not self._blocks and not lease.in_transaction:
            if not self.autocommit:
                await lease.abegin()
            elif self._wrap and not self._pipeline:
                wrap = True
        async with lease.statement(
            query, noted_by=self._blocks[-1]._lease if self._blocks else None
        ):
            if not wrap:
                return await fn(*args, **kwargs)
            await lease.abegin()
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                await lease.arollback()
                raise
            await lease.acommit()
            return result

    async def _turn(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed or not self._check.ok():
            await self._adenied()
        async with self._lease.turn():
            return await fn(*args)

    async def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            if not lease.in_transaction:
                await lease.abegin()
        elif verb == "commit":
            await lease.acommit()
        elif verb == "rollback":
            await lease.arollback()

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """Hold the turn (and the app's transaction) for a pipeline, COPY or stream."""
        if self._closed or not self._check.ok():
            await self._adenied()
        lease = self._lease
        if not self.autocommit and not self._in_transaction():
            await lease.abegin()
        async with lease.turn(check=True):
            yield

    # -- the psycopg.AsyncConnection interface -----------------------------------------

    def cursor(self, *args: Any, **kwargs: Any) -> AsyncSandboxCursor:
        if self._closed:
            raise self._closed_error()
        cursor = self._raw.cursor(*args, **self._cursor_kwargs(kwargs))
        return AsyncSandboxCursor(
            self, cursor, server_side=bool(args and args[0]) or "name" in kwargs
        )

    async def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool = False
    ) -> AsyncSandboxCursor:
        return await self.cursor(binary=binary).execute(query, params, prepare=prepare)

    async def commit(self) -> None:
        if self._closed or not self._check.ok():
            await self._adenied()
        if self._blocks:
            raise self._commit_forbidden("commit")
        await self._lease.acommit()

    async def rollback(self) -> None:
        if self._closed or not self._check.ok():
            await self._adenied()
        if self._blocks:
            raise self._commit_forbidden("rollback")
        await self._lease.arollback()

    @asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[SandboxTransaction]:
        if self._closed or not self._check.ok():
            await self._adenied()
        lease = await self._fork()
        await lease.abegin()
        block = SandboxTransaction(self, savepoint_name, lease)
        self._blocks.append(block)
        try:
            yield block
        except BaseException as exc:
            await self._end_block(block, lease, commit=False)
            if swallow(block, exc):
                return
            raise
        await self._end_block(block, lease, commit=not force_rollback)

    async def _end_block(self, block: Any, lease: Lease, *, commit: bool) -> None:
        if block in self._blocks:
            self._blocks.remove(block)
        await (lease.acommit() if commit else lease.arollback())

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[Any]:
        async with self._held():
            self._pipeline += 1
            try:
                async with self._raw.pipeline() as pipeline:
                    yield pipeline
            finally:
                self._pipeline -= 1

    async def set_autocommit(self, value: bool) -> None:
        self.autocommit = bool(value)

    async def set_isolation_level(self, value: Any) -> None:
        self._settings["isolation_level"] = value

    async def set_read_only(self, value: Any) -> None:
        self._settings["read_only"] = value

    async def set_deferrable(self, value: Any) -> None:
        self._settings["deferrable"] = value

    async def close(self) -> None:
        await self._give_back()

    async def _give_back(self) -> None:
        if self._closed:
            return
        self._closed = True
        blocks, self._blocks = self._blocks, []
        for block in reversed(blocks):
            await block._lease.aclose()
        await self._lease.aclose()

    async def __aenter__(self) -> AsyncSandboxConnection:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._closed:
            return
        if self._check.ok():
            if exc_type is None:
                await self.commit()
            else:
                await self.rollback()
        await self.close()


class AsyncSandboxCursor(CursorProxy):
    """A real async cursor of the owner's connection; statements take turns."""

    __slots__ = ()
    _conn: AsyncSandboxConnection
    _cursor: Any

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> AsyncSandboxCursor:
        await self._conn._run(self._cursor.execute, (query, params), kwargs)
        return self

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        await self._conn._run(self._cursor.executemany, (query, params_seq), kwargs)

    @asynccontextmanager
    async def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        async with self._conn._held(), self._cursor.copy(statement, params, **kwargs) as copy:
            yield copy

    async def stream(self, query: Any, params: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        async with self._conn._held():
            async for row in self._cursor.stream(query, params, **kwargs):
                yield row

    async def _fetch(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._server_side:
            return await fn(*args)
        return await self._conn._turn(fn, *args)

    async def fetchone(self) -> Any:
        return await self._fetch(self._cursor.fetchone)

    async def fetchmany(self, *args: Any) -> Any:
        return await self._fetch(self._cursor.fetchmany, *args)

    async def fetchall(self) -> Any:
        return await self._fetch(self._cursor.fetchall)

    async def scroll(self, *args: Any) -> Any:
        return await self._fetch(self._cursor.scroll, *args)

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (row := await self.fetchone()) is not None:
            yield row

    async def close(self) -> None:
        await self._fetch(self._cursor.close)

    async def __aenter__(self) -> AsyncSandboxCursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
