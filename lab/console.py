"""Console-socket receiver for tests: accepts one connection on the socket path given as argv[1],
receives the pty master runc sends (SCM_RIGHTS), prints "ready" once listening and relays what
the container writes to its terminal to stdout."""
import os
import socket
import sys

path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
_, fds, _, _ = socket.recv_fds(conn, 4096, 1)
conn.close()
master = fds[0]
print("got-master", flush=True)
while True:
    try:
        data = os.read(master, 4096)
    except OSError:
        break
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
