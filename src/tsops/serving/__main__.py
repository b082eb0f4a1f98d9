"""``python -m tsops.serving``: the model server, as the image runs it."""

import sys

from tsops.core.errors import TsopsError
from tsops.serving.server import main

if __name__ == "__main__":
    try:
        main()
    except TsopsError as exc:
        # the one red line `tsops serve` gives through its command decorator
        print(f"error: {exc.report()}", file=sys.stderr)
        sys.exit(exc.exit_code)
