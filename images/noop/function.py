"""noop: the smallest HTTP function. Answers every request with serve.py's JSON status.

Nothing to initialise: what a cold start of it costs is the runtime's start (Python, the HTTP
server), the floor every function pays. The status says how many requests this process has
served (a restored replica continues the count of the process it was baked from), whether it
was restored, and its replica id.
"""
import os
import sys

# serve.py sits beside this file in the image (/app), in images/common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from serve import serve  # noqa: E402

if __name__ == "__main__":
    serve("noop", lambda request: None)
