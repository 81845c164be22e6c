"""scripts/setup.sh waits for a package manager busy with automatic updates."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _wait(locks: list[Path], seconds: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOODSHIFT_APT_LOCKS": " ".join(map(str, locks)),
           "MOODSHIFT_APT_WAIT": str(seconds)}  # fmt: skip
    cmd = f". {SCRIPTS / 'apt_lock.sh'} && wait_for_apt_lock"
    return subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_held_lock_is_waited_for_then_a_clear_timeout(tmp_path: Path) -> None:
    lock, absent = tmp_path / "lock-frontend", tmp_path / "no-such-lock"
    lock.touch()
    assert _wait([lock, absent], 2).returncode == 0  # free: no wait, no message
    fd = os.open(lock, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)  # the kind of lock apt and dpkg take
    try:
        t0 = time.monotonic()
        res = _wait([lock], 2)
        assert res.returncode == 1 and time.monotonic() - t0 >= 2
        assert "waiting for the package manager" in res.stderr
        assert f"{lock} is held by another process" in res.stderr
        assert "still locked after 2s" in res.stderr and "re-run scripts/setup.sh" in res.stderr
        # Released while waiting: the wait ends and says so.
        proc = subprocess.Popen(
            ["bash", "-c", f". {SCRIPTS / 'apt_lock.sh'} && wait_for_apt_lock"],
            env={**os.environ, "MOODSHIFT_APT_LOCKS": str(lock), "MOODSHIFT_APT_WAIT": "30"},
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting
    finally:
        os.close(fd)  # releases the lock
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "free after" in err


def test_setup_waits_before_apt_get() -> None:
    text = (SCRIPTS / "setup.sh").read_text()
    assert ". scripts/apt_lock.sh" in text
    assert text.index("wait_for_apt_lock") < text.index('apt-get "${apt_wait[@]}" update')
