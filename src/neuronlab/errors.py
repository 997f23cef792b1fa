"""The one exception neuronlab raises for bad input: its message names the problem and the fix."""


class NeuronlabError(ValueError):
    """Bad input or a mismatch the user can fix; the CLI prints its message without a traceback."""
