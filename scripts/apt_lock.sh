# shellcheck shell=bash
# wait_for_apt_lock: wait until no other process holds the apt/dpkg locks.
#
# On a fresh server unattended-upgrades (or cloud-init) often holds them for
# minutes; apt-get would then fail at once with "Could not get lock". apt and
# dpkg take POSIX (fcntl) locks on these files, so a non-blocking lockf on each
# one, released at once, tells whether they are free (flock(1) would not see them).
#
#   MOODSHIFT_APT_WAIT   seconds to wait at most (default 900)
#   MOODSHIFT_APT_LOCKS  the lock files, space-separated (default: dpkg's and apt's)
# Returns 0 when free, 1 with a message naming the holder and the fix on timeout.
wait_for_apt_lock() {
  local timeout="${MOODSHIFT_APT_WAIT:-900}" waited=0 said=0 holder
  local locks="${MOODSHIFT_APT_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}"
  while ! holder=$(_apt_lock_holder "$locks"); do
    if [ "$waited" -ge "$timeout" ]; then
      echo "setup: the package manager is still locked after ${timeout}s ($holder);" \
           "wait for it to finish (or stop it), then re-run scripts/setup.sh;" \
           "MOODSHIFT_APT_WAIT=SECONDS waits longer" >&2
      return 1
    fi
    if [ "$said" = 0 ]; then
      echo "setup: waiting for the package manager ($holder), at most ${timeout}s ..." >&2
      said=1
    elif [ $((waited % 30)) = 0 ]; then
      echo "setup: still waiting for the package manager (${waited}s)" >&2
    fi
    sleep 1
    waited=$((waited + 1))
  done
  [ "$said" = 0 ] || echo "setup: the package manager is free after ${waited}s" >&2
  return 0
}

# Prints nothing and succeeds when every lock is free; else prints the busy lock file.
_apt_lock_holder() {
  python3 - "$@" <<'PY'
import fcntl, os, sys
for path in sys.argv[1].split():
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        continue  # no such lock file (or not ours to open): nothing to wait for
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"{path} is held by another process")
        sys.exit(1)
    finally:
        os.close(fd)
PY
}
