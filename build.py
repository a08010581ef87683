#!/usr/bin/env python3
"""fastsock: build the patched Linux 6.12 kernel, modules and libfsocket; run the tests.

    python3 build.py --arch x86_64     # build (vm profile) into out/x86_64/vm/
    python3 build.py test              # unit tests, then boot the kernel in QEMU and test inside

`python3 build.py --help` lists every subcommand.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastsock import bootstrap

if __name__ == "__main__":
    bootstrap.reexec_in_venv(Path(__file__).resolve().parent, [str(Path(__file__).resolve()), *sys.argv[1:]])
    from fastsock.cli import main

    sys.exit(main(sys.argv[1:]))
