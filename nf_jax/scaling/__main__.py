"""python -m nf_jax.scaling: see nf_jax/scaling/cli.py."""
import sys

from nf_jax.scaling.cli import main

sys.exit(main())
