"""``python -m imgproxy`` is the ``imgproxy`` command."""

from imgproxy.cli import main

raise SystemExit(main())
