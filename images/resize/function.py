"""resize: shrinks a picture held in memory to 10% of its width and height (python3-pil).

Initialisation draws a 1600x1200 picture, always the same one (gradients plus noise from a fixed
seed), encodes it as a JPEG of about 1 MB and loads that JPEG: the decoded picture stays in memory.
GET /resize answers the picture shrunk to 160x120 as image/jpeg; any other request answers the
JSON status of serve.py, which gives the source's size.
"""
import hashlib
import io
import os
import random
import sys

# serve.py sits beside this file in the image (/app), in images/common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from serve import Response, serve  # noqa: E402  first: starts the initialisation clock

from PIL import Image  # noqa: E402

WIDTH, HEIGHT = 1600, 1200
SCALE = 10  # the answer is 1/SCALE of the source's width and height
SEED = 20240501
NOISE = 0.3  # the noise's share of each pixel: what brings the JPEG to about 1 MB


def draw():
    """Red and green ramp across and down, blue the other way, blended with seeded noise."""
    ramp = Image.linear_gradient("L")  # 256x256, black at the top to white at the bottom
    down = ramp.resize((WIDTH, HEIGHT))
    across = ramp.rotate(90).resize((WIDTH, HEIGHT))
    back = ramp.rotate(180).resize((WIDTH, HEIGHT))
    gradient = Image.merge("RGB", (across, down, back))
    noise = Image.frombytes("RGB", (WIDTH, HEIGHT), random.Random(SEED).randbytes(WIDTH * HEIGHT * 3))
    return Image.blend(gradient, noise, NOISE)


encoded = io.BytesIO()
draw().save(encoded, "JPEG", quality=90)
SOURCE_JPEG = encoded.getvalue()
source = Image.open(io.BytesIO(SOURCE_JPEG))
source.load()
SIZE = (source.width // SCALE, source.height // SCALE)


def shrink():
    out = io.BytesIO()
    source.resize(SIZE, Image.LANCZOS).save(out, "JPEG", quality=85)
    return out.getvalue()


shrink()


def handle(request):
    if request.method == "GET" and request.path == "/resize":
        return Response(200, "image/jpeg", shrink())
    return None


if __name__ == "__main__":
    serve("resize", handle, {
        "width": source.width,
        "height": source.height,
        "source_bytes": len(SOURCE_JPEG),
        "source_sha256": hashlib.sha256(SOURCE_JPEG).hexdigest(),
    })
