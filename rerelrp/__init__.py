"""ReReLRP: replay-free class-incremental learning that remembers and recognises tasks with LRP."""
from rerelrp.errors import ConfigError, DataError, RerelrpError, StopRequested

__all__ = ["ConfigError", "DataError", "RerelrpError", "StopRequested", "ReReLRP"]
__version__ = "0.2.0"


def __getattr__(name):
    if name == "ReReLRP":  # the learner pulls in torch; import it only when asked for
        from rerelrp.method.learner import ReReLRP

        return ReReLRP
    raise AttributeError(name)
