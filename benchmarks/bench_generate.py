"""Generation speed: the same measurement and table as `tinylm bench` (options are passed through).

python benchmarks/bench_generate.py
python benchmarks/bench_generate.py --shapes stories15M --threads 2
"""

import sys

from tinylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
