"""markdown: renders the Markdown document sent in a POST body to an HTML page (python3-markdown).

POST /render (any path) with a UTF-8 Markdown body answers text/html; a GET answers the JSON status
of serve.py. Initialisation imports markdown and its extensions and renders a sample once, so that
the first request finds everything loaded.
"""
import html
import os
import re
import sys

# serve.py sits beside this file in the image (/app), in images/common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from serve import BadRequest, Response, serve  # noqa: E402  first: starts the initialisation clock

import markdown  # noqa: E402

EXTENSIONS = ["extra", "sane_lists", "smarty"]
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
</head>
<body>
{body}
</body>
</html>
"""
SAMPLE = "# Sample\n\nSome *emphasis*, a [link](https://example.org) and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"

renderer = markdown.Markdown(extensions=EXTENSIONS, output_format="html")


def render(text):
    body = renderer.reset().convert(text)
    heading = re.search(r"<h[1-6][^>]*>(.*?)</h[1-6]>", body, re.S)
    title = html.unescape(re.sub(r"<[^>]+>", "", heading.group(1))).strip() if heading else ""
    return PAGE.format(title=html.escape(title or "Document"), body=body)


render(SAMPLE)


def handle(request):
    if request.method != "POST":
        return None
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 ({e})")
    return Response(200, "text/html; charset=utf-8", render(text).encode())


if __name__ == "__main__":
    serve("markdown", handle, {"markdown_version": markdown.__version__, "extensions": EXTENSIONS})
