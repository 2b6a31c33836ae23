"""Process-tree bookkeeping from /proc, and stopping what we started.

A server under test is a tree: a master and its workers (and their threads,
which /proc folds into each process). Its CPU time is the sum of utime+stime
over the tree, plus cutime+cstime for children that already exited and were
reaped; its memory is the sum of VmRSS over the tree, sampled during the run.
"""

import os
import signal
import threading

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read_stat(pid):
    """(ppid, CPU ticks, start time) of one process, or None if it is gone.

    CPU ticks are utime+stime+cutime+cstime; the start time (in ticks since
    boot) tells a process from a later one that reused its PID.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain
    # spaces or ')', so split after the last ')'. Fields from there: state is
    # field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17, starttime 22
    # (proc(5)), so field N is rest[N - 3].
    rest = data[data.rindex(")") + 2 :].split()
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return ppid, ticks, int(rest[19])


def process_tree(root):
    """{pid: start time} of ``root`` and all its descendants (one scan of /proc)."""
    children, start = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(entry)
            if st:
                children.setdefault(st[0], []).append(int(entry))
                start[int(entry)] = st[2]
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in start:
            tree[pid] = start[pid]
            todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids):
    """CPU seconds (user+system, including reaped children) used so far by these processes."""
    total = 0
    for pid in pids:
        st = _read_stat(pid)
        if st:
            total += st[1]
    return total / CLK_TCK


def rss_kib(pid):
    """VmRSS of one process in KiB (0 if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread.

    Keeps the peak of the tree's total, of the root process alone (the
    master, for prefork servers) and of the largest other process (a worker),
    and every PID it has seen, so ``stop_tree`` can kill a worker even if it
    left the process group.
    """

    def __init__(self, root, interval=0.1):
        self.root = root
        self.interval = interval
        self.peak_tree_kib = 0
        self.peak_root_kib = 0
        self.peak_worker_kib = 0
        #: {pid: start time} of every process seen in the tree
        self.seen = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self):
        tree = process_tree(self.root)
        self.seen.update(tree)
        sizes = {pid: rss_kib(pid) for pid in tree}
        self.peak_tree_kib = max(self.peak_tree_kib, sum(sizes.values()))
        self.peak_root_kib = max(self.peak_root_kib, sizes.get(self.root, 0))
        others = [v for pid, v in sizes.items() if pid != self.root]
        if others:
            self.peak_worker_kib = max(self.peak_worker_kib, max(others))

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def stop_tree(proc, seen=None):
    """Kills a server we started: its process group, then any straggler we saw in its tree.

    Every server is started in a new session (``start_new_session=True``), so
    its process group holds exactly the processes it forked; signalling the
    group cannot reach anything else. A benchmark does not need a graceful
    stop, so SIGKILL: it is immediate and cannot be ignored.
    """
    pids = dict(seen or {})
    if proc.poll() is None:
        pids.update(process_tree(proc.pid))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, started in pids.items():
        # A straggler is killed only if it is the very process we saw in the
        # tree: same PID and same start time, never a later one reusing the PID.
        st = _read_stat(pid)
        if st and st[2] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=5)
    except Exception:
        pass
