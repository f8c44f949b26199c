"""pprl: privacy-preserving record linkage and encrypted score sharing.

The names below are what a pipeline needs; each party's steps live in
``pprl.protocol`` and the primitives in ``pprl.crypto``, ``pprl.encoding`` and ``pprl.matching``.
"""

from tqdm import tqdm as _tqdm

# tqdm's monitor thread would outlive every progress bar; a live thread stops
# the encoder from forking workers safely, so pprl runs without it.
_tqdm.monitor_interval = 0

from pprl.protocol.audit import verify_log  # noqa: E402
from pprl.errors import PPRLError  # noqa: E402
from pprl.protocol.decrypt import decrypt_release, paillier_keygen  # noqa: E402
from pprl.protocol.link import link  # noqa: E402
from pprl.protocol.aggregate import aggregate  # noqa: E402
from pprl.protocol.identity import init_party, load_card, load_key  # noqa: E402
from pprl.protocol.submit import submit  # noqa: E402
from pprl.protocol.secret import combine_secrets, share_secret  # noqa: E402
from pprl.sim.synth import generate_population  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "PPRLError",
    "__version__",
    "aggregate",
    "combine_secrets",
    "decrypt_release",
    "generate_population",
    "init_party",
    "link",
    "load_card",
    "load_key",
    "paillier_keygen",
    "share_secret",
    "submit",
    "verify_log",
]
