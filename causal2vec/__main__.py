import sys

from causal2vec.cli import main

sys.exit(main())
