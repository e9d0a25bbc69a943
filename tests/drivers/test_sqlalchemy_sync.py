"""A blocking SQLAlchemy engine the app built itself, routed through the sandbox."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import String, create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlsandbox import ConfigError, OwnershipError, Sandbox, SandboxError
from sqlsandbox.sqlalchemy import (
    SandboxPool,
    import_engine,
    install,
    installed,
    is_installed,
    uninstall,
)

from .conftest import Routed, children, count_sql, items, names_sql

ENGINE = create_engine("sqlite://")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


def test_orm_session_commits_are_rolled_back_at_checkin(routed: Routed, tag: str) -> None:
    with routed.sandbox.checkout(name="test_orm"):
        with Session(routed.engine) as session:
            session.add(Item(name=tag + "a"))
            session.commit()
            session.add(Item(name=tag + "b"))
            session.commit()
        with Session(routed.engine) as other:  # commit-then-read in a new session
            assert other.scalars(select(Item.name).where(Item.name.like(tag + "%"))).all() == [
                tag + "a",
                tag + "b",
            ]
        assert routed.committed(tag) == []  # nobody outside sees it
    assert routed.committed(tag) == []
    with routed.sandbox.checkout(), Session(routed.engine) as session:
        assert session.scalars(select(Item).where(Item.name.like(tag + "%"))).all() == []


def test_core_connections_begin_and_rollback(routed: Routed, tag: str) -> None:
    engine = routed.engine
    with routed.sandbox.checkout():
        with engine.begin() as conn:
            conn.execute(insert(items), [{"name": tag + "begin"}])
        with engine.connect() as conn:
            conn.execute(insert(items).values(name=tag + "rolled-back"))
            conn.rollback()
            conn.execute(insert(items).values(name=tag + "committed"))
            conn.commit()
            conn.execute(insert(items).values(name=tag + "left-open"))
        with engine.connect() as conn:  # closing rolled back what was left open
            assert list(conn.execute(names_sql(tag)).scalars()) == [
                tag + "begin",
                tag + "committed",
            ]


def test_begin_nested_inside_the_app_transaction(routed: Routed, tag: str) -> None:
    with routed.sandbox.checkout(), Session(routed.engine) as session:
        session.add(Item(name=tag + "outer"))
        nested = session.begin_nested()
        session.add(Item(name=tag + "inner"))
        session.flush()
        nested.rollback()
        with session.begin_nested():
            session.add(Item(name=tag + "inner2"))
        session.commit()
        assert list(session.scalars(names_sql(tag))) == [tag + "inner2", tag + "outer"]


def test_an_integrity_error_does_not_poison_the_test_transaction(routed: Routed, tag: str) -> None:
    with routed.sandbox.checkout(), Session(routed.engine) as session:
        session.add(Item(name=tag + "dup"))
        session.commit()
        session.add(Item(name=tag + "dup"))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.add(Item(name=tag + "after"))
        session.commit()
        assert session.scalar(count_sql(tag)) == 2


def test_autocommit_connections_stay_inside_the_sandbox(routed: Routed, tag: str) -> None:
    with routed.sandbox.checkout():
        with routed.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(insert(items).values(name=tag + "auto"))
            with pytest.raises(IntegrityError):
                conn.execute(insert(items).values(name=tag + "auto"))
            conn.execute(insert(items).values(name=tag + "auto2"))
        with routed.engine.connect() as conn:
            assert conn.scalar(count_sql(tag)) == 2
    assert routed.committed(tag) == []


def test_code_without_ownership_gets_a_clear_error(routed: Routed) -> None:
    with pytest.raises(OwnershipError, match=r"is not allowed: the sandbox is in manual mode"):
        with routed.engine.connect():
            pass
    with pytest.raises(OwnershipError, match=r"sandbox-" + routed.driver):
        with Session(routed.engine) as session:
            session.execute(text("SELECT 1"))


def test_threads_need_allow_and_then_share_the_transaction(routed: Routed, tag: str) -> None:
    owner = routed.sandbox.checkout()

    def work(i: int) -> None:
        with Session(routed.engine) as session:
            session.add(Item(name=f"{tag}{i:02d}"))
            session.commit()

    with ThreadPoolExecutor(4, thread_name_prefix="app-worker") as pool:
        with pytest.raises(OwnershipError, match=r"thread 'app-worker"):
            pool.submit(work, 0).result()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            routed.sandbox.allow(owner, t)
            t.start()
        for t in threads:
            t.join()
    with Session(routed.engine) as session:
        assert session.scalar(count_sql(tag)) == 8
    routed.sandbox.checkin(owner)
    assert routed.committed(tag) == []


def test_auto_mode_and_unboxed_write_for_real(routed: Routed, tag: str) -> None:
    try:
        routed.sandbox.mode("auto")
        with Session(routed.engine) as session:
            session.add(Item(name=tag + "auto"))
            session.commit()
        routed.sandbox.mode("manual")
        with routed.sandbox.checkout(), routed.sandbox.unboxed(), routed.engine.begin() as conn:
            conn.execute(insert(items).values(name=tag + "unboxed"))
        assert routed.committed(tag) == [tag + "auto", tag + "unboxed"]
    finally:
        routed.cleanup(tag)


def test_sandbox_false_checkout_commits(routed: Routed, tag: str) -> None:
    try:
        with routed.sandbox.checkout(sandbox=False), Session(routed.engine) as session:
            session.add(Item(name=tag + "real"))
            session.commit()
            assert routed.committed(tag) == [tag + "real"]
    finally:
        routed.cleanup(tag)


def test_ddl_on_mariadb_fails_and_recommends_a_database_of_its_own(routed: Routed) -> None:
    if routed.backend != "mariadb":
        pytest.skip("only MariaDB/MySQL commit DDL implicitly")
    with routed.sandbox.checkout(name="test_migrate"), routed.engine.connect() as conn:
        with pytest.raises(
            OwnershipError, match=r"'CREATE TABLE' commits implicitly.*isolation=\"database\""
        ):
            conn.execute(text("CREATE TABLE sqlsandbox_oops (id int)"))
        with pytest.raises(OwnershipError, match=r"'ALTER TABLE' commits implicitly"):
            conn.exec_driver_sql("ALTER TABLE items ADD COLUMN oops int")
        conn.execute(text("CREATE TEMPORARY TABLE scratch (id int)"))  # temporary tables are fine


def test_ddl_on_postgresql_and_sqlite_is_rolled_back(routed: Routed) -> None:
    if routed.backend == "mariadb":
        pytest.skip("MariaDB commits DDL")
    table = f"sqlsandbox_t{threading.get_ident() % 100000}"
    with routed.sandbox.checkout(), routed.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int)"))
    with routed.sandbox.checkout(), routed.engine.connect() as conn:
        with pytest.raises(Exception, match=r"(?i)no such table|does not exist"):
            conn.execute(text(f"SELECT * FROM {table}"))


def test_deferred_constraints_can_be_checked_before_rollback(routed: Routed) -> None:
    if routed.backend != "postgresql":
        pytest.skip("deferred constraints are checked on PostgreSQL")
    with routed.sandbox.checkout(name="test_deferred"):
        with routed.engine.begin() as conn:
            conn.execute(insert(children).values(id=1, parent_id=99))
        with pytest.raises(SandboxError, match=r"deferred constraint of owner 'test_deferred'"):
            routed.sandbox.check_deferred()


def test_killed_backend_mid_test_then_a_healthy_next_checkout(routed: Routed, tag: str) -> None:
    if routed.backend != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    plain = routed.plain_engine()
    try:
        with routed.sandbox.checkout(name="test_fault"), Session(routed.engine) as session:
            session.add(Item(name=tag + "a"))
            session.commit()
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            with plain.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(OwnershipError, match=r"connection of owner 'test_fault' was lost"):
                session.execute(text("SELECT 1"))
            session.rollback()
            with pytest.raises(OwnershipError, match=r"was lost"):
                session.scalar(text("SELECT 1"))
        with routed.sandbox.checkout(), Session(routed.engine) as session:
            assert session.scalar(text("SELECT pg_backend_pid()")) != pid
            assert session.scalar(count_sql(tag)) == 0
    finally:
        plain.dispose()


def test_isolation_level_of_the_test_transaction(routed: Routed) -> None:
    if routed.backend != "postgresql":
        pytest.skip("checked with SHOW on PostgreSQL")
    sandbox = Sandbox(routed.url, isolation_level="SERIALIZABLE")
    uninstall(routed.engine)
    install(routed.engine, sandbox)
    try:
        with sandbox.checkout(), routed.engine.connect() as conn:
            assert conn.scalar(text("SHOW transaction_isolation")) == "serializable"
    finally:
        sandbox.close()


def test_install_is_idempotent_survives_dispose_and_uninstalls(routed: Routed) -> None:
    engine = routed.engine
    install(engine, routed.sandbox)
    assert is_installed(engine, routed.sandbox)
    engine.dispose()
    assert isinstance(engine.pool, SandboxPool)  # dispose() recreated a routed pool
    with pytest.raises(ConfigError, match=r"already routed through sandbox"):
        install(engine, Sandbox(routed.url))
    uninstall(engine)
    assert not is_installed(engine)
    with engine.connect() as conn:  # a plain engine again
        assert conn.scalar(text("SELECT 1")) == 1
    with installed(engine, routed.sandbox):
        assert is_installed(engine)
    assert not is_installed(engine)
    install(engine, routed.sandbox)


def test_install_refuses_another_database_and_in_memory_sqlite(routed: Routed) -> None:
    other = create_engine(routed.engine.url.set(database="somewhere_else"))
    with pytest.raises(
        ConfigError, match=r"points at database .* a test transaction cannot cover two"
    ):
        install(other, routed.sandbox)
    memory = create_engine("sqlite://")
    with pytest.raises(ConfigError, match=r"in-memory SQLite"):
        install(memory, Sandbox())
    memory.dispose()
    other.dispose()


def test_import_engine_reads_the_engines_setting() -> None:
    assert import_engine(f"{__name__}:ENGINE") is ENGINE
    with pytest.raises(ConfigError, match=r"write it as 'package.module:attribute'"):
        import_engine("nocolon")
    with pytest.raises(ConfigError, match=r"Cannot import module 'no_such_mod_xyz'"):
        import_engine("no_such_mod_xyz:engine")
    with pytest.raises(ConfigError, match=r"has no attribute 'nope'"):
        import_engine("sqlalchemy:nope")
    with pytest.raises(ConfigError, match=r"not a SQLAlchemy Engine"):
        import_engine("sqlalchemy:text")


def test_owner_ending_while_a_thread_is_mid_query(routed: Routed) -> None:
    if routed.backend == "sqlite":
        pytest.skip("needs a query that waits on a server")
    sleep = "SELECT pg_sleep(30)" if routed.backend == "postgresql" else "SELECT SLEEP(30)"
    owner = routed.sandbox.checkout(name="test_mid_query_thread")
    started = threading.Event()
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            with Session(routed.engine) as session:
                session.execute(text("SELECT 1"))
                started.set()
                session.execute(text(sleep))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, name="slow-client")
    routed.sandbox.allow(owner, thread)
    thread.start()
    started.wait()
    routed.sandbox.checkin(owner)
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], OwnershipError), outcome
    assert "'test_mid_query_thread' checked in" in str(outcome[0])
    with routed.sandbox.checkout(), routed.engine.connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1
