"""Plays the engine's shim for tests: becomes a child subreaper, runs the runtime commands given
as JSON argv lists (argv[2]), then waits for the container's init (pid in the file argv[1]),
which is reparented to it, and prints its exit status as JSON."""
import ctypes
import json
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")

pid_file, steps = sys.argv[1], json.loads(sys.argv[2])
for argv in steps:
    code = subprocess.run(argv).returncode
    if code != 0:
        print(json.dumps({"failed": argv, "code": code}), flush=True)
        sys.exit(1)
pid = int(open(pid_file).read())
print(json.dumps({"ready": pid}), flush=True)
_, status = os.waitpid(pid, 0)
print(json.dumps({
    "exitCode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
}), flush=True)
