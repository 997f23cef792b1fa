"""python -m neuronlab (torchrun -m neuronlab ...) runs the command line."""

from neuronlab.cli import main

main()
