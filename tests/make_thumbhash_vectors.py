"""Writes ``tests/transform/thumbhash_vectors.json``: each picture of ``thumbhash_images.py`` hashed by the
reference encoder (Evan Wallace's ``js/thumbhash.js``) under Node. Not a test; run by hand:

    git clone https://github.com/evanw/thumbhash /tmp/thumbhash   # a652ce6 was used
    .venv/bin/python tests/make_thumbhash_vectors.py /tmp/thumbhash/js/thumbhash.js
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from thumbhash_images import IMAGES, pixels

SCRIPT = """
import { readFileSync } from "node:fs";
import { rgbaToThumbHash } from "%s";
const items = JSON.parse(readFileSync(0, "utf8"));
const out = {};
for (const [name, [w, h, rgba]] of Object.entries(items)) {
  out[name] = Buffer.from(rgbaToThumbHash(w, h, Buffer.from(rgba, "base64"))).toString("base64");
}
process.stdout.write(JSON.stringify(out));
"""


def main(reference: str) -> None:
    items = {name: [w, h, base64.b64encode(pixels(w, h, kind)).decode()]
             for name, (w, h, kind) in IMAGES.items()}
    module = Path(reference).resolve().as_uri()
    done = subprocess.run(["node", "--input-type=module", "-e", SCRIPT % module], input=json.dumps(items),
                          capture_output=True, text=True, check=True)
    hashes = json.loads(done.stdout)
    target = Path(__file__).parent / "transform" / "thumbhash_vectors.json"
    about = ("ThumbHash of each picture of tests/thumbhash_images.py by the reference js/thumbhash.js "
             "(evanw/thumbhash a652ce6)")
    target.write_text(json.dumps({"about": about, "hashes": hashes}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
